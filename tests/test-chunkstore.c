/* s3chunk: unit tests of the chunk store: creating, reopening, growing and
 * refusing volumes; chunk round trips; zero chunks as no object; the map.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "chunkstore.h"
#include "unit.h"

#define CHUNK (64 * 1024)

static struct cs_volume *
open_vol (struct objstore *os, uint64_t size, uint32_t chunk, int level,
          int expect)
{
  struct cs_volume_params p = { .size = size, .chunk_size = chunk,
                                .level = level };
  struct cs_volume *v = NULL;

  CHECK_EQ (cs_volume_open (os, &p, &v), expect);
  return v;
}

/* Growing while other threads use the map (the plugin grows a served
 * volume): each mapper owns the indexes i with i % NMAPPERS == its number
 * and keeps a shadow of their bits.  Round after round it checks every
 * owned bit against the shadow and flips it, and takes the chunks of each
 * new size as they appear (they must start clear).  A map that moved
 * (realloc) while they run would lose flips made on the old copy, or
 * crash: at this size the old copy is unmapped when freed.
 */
#define NMAPPERS 3
#define GROW_TO (2 * 1000 * 1000)     /* chunks: a 244 KiB map */

struct mapper {
  struct cs_volume *v;
  unsigned no;
  volatile bool *stop;
  uint8_t *shadow;
  uint64_t errors, done;
};

static void *
mapper_main (void *arg)
{
  struct mapper *m = arg;

  while (!*m->stop) {
    uint64_t n = cs_volume_nchunks (m->v), i;

    for (i = m->no; i < m->done; i += NMAPPERS) {
      if (cs_map_test (m->v, i) != m->shadow[i])
        m->errors++;
      m->shadow[i] ^= 1;
      cs_map_set (m->v, i, m->shadow[i]);
    }
    for (; i < n; i += NMAPPERS) {
      if (cs_map_test (m->v, i))
        m->errors++;            /* new space must start clear */
      m->shadow[i] = 1;
      cs_map_set (m->v, i, true);
    }
    if (n > m->done)
      m->done = n;
  }
  return NULL;
}

static void
test_grow_while_mapped (struct objstore *os)
{
  struct cs_volume *v = open_vol (os, 4 * CHUNK, CHUNK, 1, 0);
  struct cs_volume *v2;
  struct mapper m[NMAPPERS];
  pthread_t t[NMAPPERS];
  volatile bool stop = false;
  uint64_t n, i;
  unsigned k;

  CHECK_EQ (cs_map_load (v), 0);
  for (k = 0; k < NMAPPERS; ++k) {
    m[k] = (struct mapper) { .v = v, .no = k, .stop = &stop,
                             .shadow = calloc (GROW_TO + 1000000, 1) };
    CHECK (m[k].shadow != NULL);
    CHECK_EQ (pthread_create (&t[k], NULL, mapper_main, &m[k]), 0);
  }
  for (n = 4; n < GROW_TO; n += 997 + n / 8)
    CHECK_EQ (cs_volume_grow (v, n * CHUNK), 0);
  stop = true;
  for (k = 0; k < NMAPPERS; ++k) {
    pthread_join (t[k], NULL);
    CHECK_EQ (m[k].errors, 0);
  }
  /* The map says what each mapper last wrote, up to the last size. */
  for (i = 0; i < cs_volume_nchunks (v); ++i) {
    struct mapper *o = &m[i % NMAPPERS];
    if (cs_map_test (v, i) != (i < o->done && o->shadow[i])) {
      CHECK (!"a map bit differs from what its mapper wrote");
      break;
    }
  }
  for (k = 0; k < NMAPPERS; ++k)
    free (m[k].shadow);
  cs_volume_close (v);

  /* A grow whose superblock write landed but whose answer was lost for
   * good leaves the store larger than the process believes; the next
   * attempt of the same grow finds its own text there (412 on the old
   * etag) and adopts it; a different size is refused as a concurrent
   * change.  Here a second handle plays the earlier attempt.
   */
  v = open_vol (os, 0, 0, -1, 0);
  v2 = open_vol (os, 0, 0, -1, 0);
  n = v->size;
  CHECK_EQ (cs_volume_grow (v2, n + 8 * CHUNK), 0);
  CHECK_EQ (cs_volume_grow (v, n + 9 * CHUNK), -EBUSY);
  CHECK_EQ (v->size, n);
  CHECK_EQ (cs_volume_grow (v, n + 8 * CHUNK), 0);
  CHECK_EQ (v->size, n + 8 * CHUNK);
  CHECK_EQ (cs_volume_grow (v, n + 10 * CHUNK), 0);      /* its etag now */
  cs_volume_close (v2);
  cs_volume_close (v);
}

int
main (void)
{
  char *dir = unit_tmpdir ();
  struct objstore *os;
  struct cs_volume *v;
  struct codec_ctx *ctx = codec_ctx_new ();
  struct cs_buf scratch = CS_BUF_INIT, b = CS_BUF_INIT;
  static uint8_t data[CHUNK], back[CHUNK];
  uint8_t id[CODEC_VOLUME_ID_SIZE];
  uint64_t idx;
  char key[32];

  unit_init ();
  CHECK_EQ (objstore_dir_open (dir, false, &os), 0);

  /* Too many chunks to track is refused before anything is written. */
  open_vol (os, UINT64_C (1) << 50, CHUNK, -1, -EINVAL);
  CHECK (unit_logged ("larger chunk size"));
  CHECK_EQ (objstore_get (os, CS_SUPERBLOCK_KEY, 4096, &b, NULL), -ENOENT);

  /* Nothing there and no size: a clear refusal. */
  open_vol (os, 0, 0, -1, -ENOENT);
  CHECK (unit_logged ("give size="));

  /* Create. */
  v = open_vol (os, 10 * CHUNK + 512, CHUNK, 3, 0);
  CHECK (v && v->size == 10 * CHUNK + 512 && v->chunk_size == CHUNK);
  CHECK_EQ (v->nchunks, 11);
  CHECK_EQ (v->level, 3);
  memcpy (id, v->volume_id, sizeof id);
  CHECK_EQ (cs_map_load (v), 0);
  CHECK_EQ (cs_map_count (v), 0);

  /* Chunks: round trip, all-zero is no object, the map follows. */
  for (size_t i = 0; i < CHUNK; ++i)
    data[i] = i * 7 + 1;
  CHECK_EQ (cs_chunk_write (v, ctx, 4, data, &scratch), 0);
  CHECK (cs_map_test (v, 4) && !cs_map_test (v, 5));
  CHECK_EQ (cs_chunk_read (v, ctx, 4, back, &scratch), 0);
  CHECK (memcmp (data, back, CHUNK) == 0);
  CHECK_EQ (cs_chunk_read (v, ctx, 5, back, &scratch), 0);
  CHECK (cs_is_zero (back, CHUNK));
  cs_chunk_key (4, key, sizeof key);
  CHECK (strcmp (key, "chunks/0000000000000004") == 0);
  CHECK (cs_chunk_key_parse (key, &idx) && idx == 4);
  CHECK (!cs_chunk_key_parse ("chunks/00000000000000zz", &idx));
  CHECK (!cs_chunk_key_parse ("chunks/4", &idx));
  CHECK (!cs_chunk_key_parse ("superblock", &idx));
  CHECK_EQ (objstore_get (os, key, 1 << 20, &b, NULL), 0);
  memset (data, 0, CHUNK);
  CHECK_EQ (cs_chunk_write (v, ctx, 4, data, &scratch), 0);
  CHECK_EQ (objstore_get (os, key, 1 << 20, &b, NULL), -ENOENT);
  CHECK (!cs_map_test (v, 4));
  data[CHUNK - 1] = 1;
  CHECK_EQ (cs_chunk_write (v, ctx, 10, data, &scratch), 0);
  cs_volume_close (v);

  /* Reopen: same geometry and id; the map is rebuilt from a listing. */
  v = open_vol (os, 0, 0, -1, 0);
  CHECK (v && v->size == 10 * CHUNK + 512 && memcmp (id, v->volume_id, 16) == 0);
  CHECK_EQ (cs_map_load (v), 0);
  CHECK_EQ (cs_map_count (v), 1);
  CHECK (cs_map_test (v, 10));
  CHECK_EQ (cs_chunk_read (v, ctx, 10, back, &scratch), 0);
  CHECK (memcmp (data, back, CHUNK) == 0);
  cs_volume_close (v);

  /* Refusals: another chunk size, another level, a smaller size. */
  open_vol (os, 0, CHUNK * 2, -1, -EINVAL);
  CHECK (unit_logged ("chunk-size"));
  open_vol (os, 0, 0, 5, -EINVAL);
  CHECK (unit_logged ("level"));
  {
    struct cs_volume_params p = { .compress = CS_COMPRESS_NONE, .level = -1 };
    CHECK_EQ (cs_volume_open (os, &p, &v), -EINVAL);
    CHECK (unit_logged ("compression=none differs"));
  }
  open_vol (os, CHUNK, 0, -1, -EINVAL);
  CHECK (unit_logged ("smaller"));
  /* The same values are accepted. */
  v = open_vol (os, 10 * CHUNK + 512, CHUNK, 3, 0);
  cs_volume_close (v);

  /* Grow: new chunks read as zeroes, the old ones stay. */
  v = open_vol (os, 20 * CHUNK, 0, -1, 0);
  CHECK (v && v->size == 20 * CHUNK && v->nchunks == 20);
  CHECK_EQ (cs_map_load (v), 0);
  CHECK (cs_map_test (v, 10) && !cs_map_test (v, 19));
  cs_volume_close (v);
  v = open_vol (os, 0, 0, -1, 0);
  CHECK (v && v->size == 20 * CHUNK);
  cs_volume_close (v);

  /* A foreign object among the chunks is reported, not fatal. */
  CHECK_EQ (objstore_put (os, "chunks/stray", "x", 1, NULL), 0);
  CHECK_EQ (objstore_put (os, "chunks/00000000000000ff", "x", 1, NULL), 0);
  v = open_vol (os, 0, 0, -1, 0);
  CHECK_EQ (cs_map_load (v), 0);
  CHECK (unit_logged ("chunks/"));
  CHECK_EQ (cs_map_count (v), 1);
  cs_volume_close (v);

  /* Damaged superblocks are refused with the key named. */
  static const char *bad[] = {
    "garbage",
    "s3chunk volume\nformat-version=3\n",
    "s3chunk volume\nformat-version=1\nsize=1024\n",
    "s3chunk volume\nformat-version=1\nvolume-id=00112233445566778899aabbccddeeff\n"
    "size=1024\nchunk-size=3000\ncodec=zstd\nlevel=1\ncreated=1\n",
    "s3chunk volume\nformat-version=1\nvolume-id=00112233445566778899aabbccddeeff\n"
    "size=1024\nchunk-size=65536\ncodec=zstd\nlevel=1\ncreated=1\nfuture=1\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
    struct cs_volume tmp;
    memset (&tmp, 0, sizeof tmp);
    CHECK_EQ (cs_superblock_parse ("superblock", bad[i], strlen (bad[i]),
                                   &tmp), -EIO);
    CHECK (unit_logged ("superblock"));
  }
  CHECK_EQ (objstore_put (os, "superblock", bad[1], strlen (bad[1]), NULL), 0);
  open_vol (os, 0, 0, -1, -EIO);
  CHECK (unit_logged ("format version 3"));

  /* A superblock write whose answer is lost (rule 9) is settled by
   * reading it back: landed means done, for a create and for a grow; one
   * that did not land is a failure, and the volume keeps its size.
   */
  {
    char *dir2 = unit_tmpdir ();
    struct objstore *inner2, *f;

    CHECK_EQ (objstore_dir_open (dir2, false, &inner2), 0);
    CHECK_EQ (objstore_fault_wrap (inner2, &f), 0);
    objstore_fault_set (f, FAULT_OP_PUT_IF, FAULT_LAND_TIMEOUT, 0, 0, 1);
    v = open_vol (f, 4 * CHUNK, CHUNK, 1, 0);
    CHECK_EQ (objstore_fault_count (f), 1);
    objstore_fault_set (f, FAULT_OP_PUT_IF, FAULT_LAND_TIMEOUT, 0, 0, 1);
    CHECK_EQ (cs_volume_grow (v, 8 * CHUNK), 0);
    CHECK_EQ (v->size, 8 * CHUNK);
    /* The etag read back is the one the next conditional write needs. */
    CHECK_EQ (cs_volume_grow (v, 9 * CHUNK), 0);
    objstore_fault_set (f, FAULT_OP_PUT_IF, FAULT_FAIL, -ETIMEDOUT, 0, 1);
    CHECK_EQ (cs_volume_grow (v, 12 * CHUNK), -ETIMEDOUT);
    CHECK (unit_logged ("did not land"));
    CHECK_EQ (v->size, 9 * CHUNK);
    cs_volume_close (v);
    v = open_vol (f, 0, 0, -1, 0);
    CHECK_EQ (v->size, 9 * CHUNK);
    cs_volume_close (v);
    objstore_close (f);
    unit_rmdir (dir2);
  }

  {
    char *dir3 = unit_tmpdir ();
    struct objstore *os3;

    CHECK_EQ (objstore_dir_open (dir3, false, &os3), 0);
    test_grow_while_mapped (os3);
    objstore_close (os3);
    unit_rmdir (dir3);
  }

  cs_buf_free (&scratch);
  cs_buf_free (&b);
  codec_ctx_free (ctx);
  objstore_close (os);
  unit_rmdir (dir);
  return unit_done ("test-chunkstore");
}
