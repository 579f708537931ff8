/* bench/zchunks: what the data of FILE would cost stored as chunks: split it
 * into CHUNK-SIZE pieces, compress each with zstd at LEVEL (one context,
 * reused), and sum.  All-zero pieces count as nothing (no object).
 *
 *   zchunks FILE CHUNK-SIZE LEVEL
 *
 * Prints: bytes= chunks= nonzero_chunks= zstd_bytes= ratio= */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

int
main (int argc, char **argv)
{
  if (argc != 4) {
    fprintf (stderr, "usage: %s FILE CHUNK-SIZE LEVEL\n", argv[0]);
    return 2;
  }
  size_t cs = strtoul (argv[2], NULL, 0);
  int level = atoi (argv[3]);
  if (cs == 0) {
    fprintf (stderr, "zchunks: bad chunk size %s\n", argv[2]);
    return 2;
  }
  FILE *f = fopen (argv[1], "rb");
  if (!f) {
    fprintf (stderr, "zchunks: %s: %s\n", argv[1], strerror (errno));
    return 1;
  }
  size_t bound = ZSTD_compressBound (cs);
  char *in = malloc (cs), *out = malloc (bound);
  ZSTD_CCtx *cctx = ZSTD_createCCtx ();
  if (!in || !out || !cctx) {
    fprintf (stderr, "zchunks: out of memory\n");
    return 1;
  }
  unsigned long long total = 0, zbytes = 0, chunks = 0, nonzero = 0;
  for (;;) {
    size_t n = fread (in, 1, cs, f);
    if (n == 0)
      break;
    total += n;
    chunks++;
    size_t i;
    for (i = 0; i < n && in[i] == 0; ++i)
      ;
    if (i == n)
      continue;
    nonzero++;
    /* The store holds whole chunks: a short last piece is zero-padded. */
    if (n < cs)
      memset (in + n, 0, cs - n);
    size_t z = ZSTD_compressCCtx (cctx, out, bound, in, cs, level);
    if (ZSTD_isError (z)) {
      fprintf (stderr, "zchunks: zstd: %s\n", ZSTD_getErrorName (z));
      return 1;
    }
    zbytes += z;
  }
  if (ferror (f)) {
    fprintf (stderr, "zchunks: read %s: %s\n", argv[1], strerror (errno));
    return 1;
  }
  fclose (f);
  printf ("bytes=%llu chunks=%llu nonzero_chunks=%llu zstd_bytes=%llu ratio=%.2f\n",
          total, chunks, nonzero, zbytes,
          zbytes ? (double) total / zbytes : 0.0);
  ZSTD_freeCCtx (cctx);
  free (in);
  free (out);
  return 0;
}
