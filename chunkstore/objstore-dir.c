/* s3chunk: the local-directory object store, the embedded default.
 *
 * Key "a/b" is the file DIR/a/b.  Durability: every put writes a temporary
 * file next to its target, fsyncs it, renames it over the target and fsyncs
 * the directory, so a crash leaves either the old or the new object.
 * Temporary files are named "<name>.tmp-*" and are never listed.
 *
 * Conditions: create-if-absent is link(2) of the fsynced temporary file,
 * which fails atomically when the name exists, even between processes.
 * Replace-if-unchanged and delete take an exclusive flock(2) on DIR/.lock so
 * that a compare and the rename that follows it are one step for every
 * process using the directory.  The etag is a hash of the content
 * (XXH3-128), like S3's MD5 etag for single-part objects.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "cleanup.h"
#include "log.h"
#include "objstore.h"

#define TMP_MARK ".tmp-"
#define LOCK_NAME ".lock"

struct dirstore {
  struct objstore os;           /* must be first */
  char *root;
  int root_fd;
};

static const struct objstore_ops dir_ops;

/* Keys are ours, but a path built from one must never leave the root. */
static int
check_key (const char *op, const char *key)
{
  const char *p;

  if (key[0] == '\0' || key[0] == '/' || strstr (key, "..") ||
      strstr (key, "//") || strstr (key, TMP_MARK) ||
      strcmp (key, LOCK_NAME) == 0)
    goto bad;
  for (p = key; *p; ++p)
    if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
          ('0' <= *p && *p <= '9') || *p == '.' || *p == '_' ||
          *p == '-' || *p == '/'))
      goto bad;
  return 0;
 bad:
  cs_error ("%s %s: invalid object key", op, key);
  return -EINVAL;
}

static void
etag_of (const void *data, size_t len, char *out, size_t outlen)
{
  XXH128_hash_t h = XXH3_128bits (data, len);
  snprintf (out, outlen, "%016" PRIx64 "%016" PRIx64,
            (uint64_t) h.high64, (uint64_t) h.low64);
}

static void
fill_info (struct objstore_info *info, const void *data, size_t len,
           const struct stat *st)
{
  if (info == NULL)
    return;
  etag_of (data, len, info->etag, sizeof info->etag);
  info->mtime = st ? st->st_mtim.tv_sec : time (NULL);
  info->date = time (NULL);
  info->size = len;
}

/* Open the directory that holds key, creating missing parents when create
 * is set.  Returns an fd, or -errno.  *base is set to the last component.
 */
static int
open_parent (struct dirstore *d, const char *key, bool create,
             const char **base)
{
  CLEANUP_FREE char *copy = strdup (key);
  char *slash, *p, *save = NULL;
  int fd, nfd;

  if (copy == NULL)
    return -ENOMEM;
  slash = strrchr (key, '/');
  *base = slash ? slash + 1 : key;
  fd = dup (d->root_fd);
  if (fd < 0)
    return -errno;
  if (slash == NULL)
    return fd;
  copy[slash - key] = '\0';
  for (p = strtok_r (copy, "/", &save); p; p = strtok_r (NULL, "/", &save)) {
    nfd = openat (fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (nfd < 0 && errno == ENOENT && create) {
      if (mkdirat (fd, p, 0755) < 0 && errno != EEXIST) {
        int e = errno;
        close (fd);
        return -e;
      }
      fsync (fd);
      nfd = openat (fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (nfd < 0) {
      int e = errno;
      close (fd);
      return -e;
    }
    close (fd);
    fd = nfd;
  }
  return fd;
}

static int
read_all (int fd, size_t max_len, struct cs_buf *out, struct stat *st)
{
  size_t size;
  int r;

  if (fstat (fd, st) < 0)
    return -errno;
  size = st->st_size;
  if (size > max_len)
    return -EFBIG;
  r = cs_buf_reserve (out, size ? size : 1);
  if (r < 0)
    return r;
  out->len = 0;
  while (out->len < size) {
    ssize_t n = pread (fd, out->data + out->len, size - out->len, out->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      break;                    /* the file shrank: it is a temp, not ours */
    out->len += n;
  }
  return 0;
}

static int
dir_get (struct objstore *os, const char *key, size_t max_len,
         struct cs_buf *out, struct objstore_info *info)
{
  struct dirstore *d = (struct dirstore *) os;
  const char *base;
  struct stat st;
  int dfd, fd, r;

  if ((r = check_key ("get", key)) < 0)
    return r;
  dfd = open_parent (d, key, false, &base);
  if (dfd < 0) {
    if (dfd == -ENOENT)
      return -ENOENT;
    cs_error ("get %s: %s/%s: %s", key, d->root, key, strerror (-dfd));
    return dfd;
  }
  fd = openat (dfd, base, O_RDONLY | O_CLOEXEC);
  r = fd < 0 ? -errno : 0;
  close (dfd);
  if (r == -ENOENT)
    return r;
  if (r == 0) {
    r = read_all (fd, max_len, out, &st);
    close (fd);
  }
  if (r == -EFBIG) {
    cs_error ("get %s: object is larger than %zu bytes: not one of ours",
              key, max_len);
    return r;
  }
  if (r < 0) {
    cs_error ("get %s: %s/%s: %s", key, d->root, key, strerror (-r));
    return r;
  }
  fill_info (info, out->data, out->len, &st);
  return 0;
}

/* Write data to a new fsynced temporary file next to base in dfd.  On
 * success the temporary name is in tmp.
 */
static int
write_tmp (int dfd, const char *base, const void *data, size_t len,
           char *tmp, size_t tmplen)
{
  uint64_t rnd;
  size_t done = 0;
  int fd;

  if (getrandom (&rnd, sizeof rnd, 0) != sizeof rnd)
    return -errno;
  snprintf (tmp, tmplen, "%s" TMP_MARK "%016" PRIx64, base, rnd);
  fd = openat (dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  while (done < len) {
    ssize_t n = write (fd, (const char *) data + done, len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      goto err;
    done += n;
  }
  if (fsync (fd) < 0)
    goto err;
  if (close (fd) < 0) {
    fd = -1;
    goto err;
  }
  return 0;
 err:;
  int e = errno;
  if (fd >= 0)
    close (fd);
  unlinkat (dfd, tmp, 0);
  return -e;
}

/* Take the store-wide lock used by compare-and-swap and delete. */
static int
lock_store (struct dirstore *d)
{
  int fd = openat (d->root_fd, LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

  if (fd < 0)
    return -errno;
  while (flock (fd, LOCK_EX) < 0) {
    if (errno != EINTR) {
      int e = errno;
      close (fd);
      return -e;
    }
  }
  return fd;
}

static void
unlock_store (int fd)
{
  if (fd >= 0)
    close (fd);                 /* releases the flock */
}

/* Compare the current content of base with etag.  0 if equal, -EEXIST if
 * different or absent, other -errno on failure.
 */
static int
compare_etag (int dfd, const char *base, const char *etag)
{
  struct cs_buf cur = CS_BUF_INIT;
  struct stat st;
  char now[64];
  int fd, r;

  fd = openat (dfd, base, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? -EEXIST : -errno;
  r = read_all (fd, SIZE_MAX, &cur, &st);
  close (fd);
  if (r == 0) {
    etag_of (cur.data, cur.len, now, sizeof now);
    r = strcmp (now, etag) == 0 ? 0 : -EEXIST;
  }
  cs_buf_free (&cur);
  return r;
}

static int
do_put (struct dirstore *d, const char *op, const char *key,
        const void *data, size_t len, bool cond, const char *if_match,
        struct objstore_info *info)
{
  const char *base;
  char tmp[NAME_MAX + 1];
  int dfd, lockfd = -1, r;

  if ((r = check_key (op, key)) < 0)
    return r;
  if (strlen (key) > NAME_MAX - 32)
    return -ENAMETOOLONG;
  dfd = open_parent (d, key, true, &base);
  if (dfd < 0) {
    r = dfd;
    goto out;
  }
  r = write_tmp (dfd, base, data, len, tmp, sizeof tmp);
  if (r < 0)
    goto out;

  if (cond && if_match == NULL) {
    /* link(2) fails with EEXIST if the name exists: atomic create. */
    r = linkat (dfd, tmp, dfd, base, 0) < 0 ? -errno : 0;
    unlinkat (dfd, tmp, 0);
  }
  else {
    if (cond) {
      lockfd = lock_store (d);
      r = lockfd < 0 ? lockfd : compare_etag (dfd, base, if_match);
    }
    if (r == 0)
      r = renameat (dfd, tmp, dfd, base) < 0 ? -errno : 0;
    if (r < 0)
      unlinkat (dfd, tmp, 0);
  }
  if (r == 0 && fsync (dfd) < 0)
    r = -errno;
  unlock_store (lockfd);

 out:
  if (dfd >= 0)
    close (dfd);
  if (r == 0)
    fill_info (info, data, len, NULL);
  else if (r != -EEXIST || !cond)
    cs_error ("%s %s: %s/%s: %s%s", op, key, d->root, key, strerror (-r),
              r == -ENOSPC ? ": free space on that file system" : "");
  return r;
}

static int
dir_put (struct objstore *os, const char *key, const void *data, size_t len,
         struct objstore_info *info)
{
  return do_put ((struct dirstore *) os, "put", key, data, len,
                 false, NULL, info);
}

static int
dir_put_if (struct objstore *os, const char *key, const void *data,
            size_t len, const char *if_match, struct objstore_info *info)
{
  return do_put ((struct dirstore *) os, "put-if", key, data, len,
                 true, if_match, info);
}

/* Delete one key with the store lock already held. */
static int
del_locked (struct dirstore *d, const char *key)
{
  const char *base;
  int dfd, r;

  if ((r = check_key ("delete", key)) < 0)
    return r;
  dfd = open_parent (d, key, false, &base);
  if (dfd == -ENOENT)
    return 0;
  if (dfd < 0)
    r = dfd;
  else {
    r = unlinkat (dfd, base, 0) < 0 && errno != ENOENT ? -errno : 0;
    close (dfd);
  }
  if (r < 0)
    cs_error ("delete %s: %s/%s: %s", key, d->root, key, strerror (-r));
  return r;
}

/* Make a batch of deletes durable: fsync every directory they touched.
 * Keys of one volume live in very few directories, so this is cheap.
 */
static int
sync_parents (struct dirstore *d, const char *const *keys, size_t n)
{
  const char *prev = NULL, *base;
  size_t prevlen = 0, i;
  int fd, r = 0;

  for (i = 0; i < n; ++i) {
    const char *slash = strrchr (keys[i], '/');
    size_t len = slash ? (size_t) (slash - keys[i]) : 0;

    if (prev && len == prevlen && strncmp (prev, keys[i], len) == 0)
      continue;
    prev = keys[i];
    prevlen = len;
    fd = open_parent (d, keys[i], false, &base);
    if (fd == -ENOENT)
      continue;
    if (fd < 0 || fsync (fd) < 0) {
      r = fd < 0 ? fd : -errno;
      cs_error ("delete: fsync of the directory of %s: %s",
                keys[i], strerror (-r));
    }
    if (fd >= 0)
      close (fd);
  }
  return r;
}

static int
dir_del_many (struct objstore *os, const char *const *keys, size_t n)
{
  struct dirstore *d = (struct dirstore *) os;
  int lockfd, r = 0, r1;
  size_t i;

  lockfd = lock_store (d);
  if (lockfd < 0) {
    cs_error ("delete: lock %s/%s: %s", d->root, LOCK_NAME, strerror (-lockfd));
    return lockfd;
  }
  for (i = 0; i < n; ++i) {
    r1 = del_locked (d, keys[i]);
    if (r1 < 0 && r == 0)
      r = r1;
  }
  r1 = sync_parents (d, keys, n);
  unlock_store (lockfd);
  return r < 0 ? r : r1;
}

static int
dir_del (struct objstore *os, const char *key)
{
  return dir_del_many (os, &key, 1);
}

/* Recursive listing below dirfd, whose path relative to the root is rel. */
static int
list_dir (struct dirstore *d, int fd, const char *rel, const char *prefix,
          objstore_list_fn fn, void *opaque)
{
  DIR *dir;
  struct dirent *e;
  int r = 0;

  dir = fdopendir (fd);
  if (dir == NULL) {
    r = -errno;
    close (fd);
    return r;
  }
  while (r == 0 && (errno = 0, e = readdir (dir)) != NULL) {
    char key[PATH_MAX];
    struct stat st;

    if (e->d_name[0] == '.' &&
        (e->d_name[1] == '\0' || strcmp (e->d_name, "..") == 0 ||
         strcmp (e->d_name, LOCK_NAME) == 0))
      continue;
    if (strstr (e->d_name, TMP_MARK))
      continue;
    if ((size_t) snprintf (key, sizeof key, "%s%s%s", rel, *rel ? "/" : "",
                           e->d_name) >= sizeof key)
      continue;
    /* Skip subtrees that cannot hold a key with the prefix. */
    if (strncmp (key, prefix, strlen (key) < strlen (prefix)
                 ? strlen (key) : strlen (prefix)) != 0)
      continue;
    if (fstatat (dirfd (dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT)
        continue;               /* deleted while we list: fine */
      r = -errno;
      break;
    }
    if (S_ISDIR (st.st_mode)) {
      int sub = openat (dirfd (dir), e->d_name,
                        O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (sub < 0) {
        if (errno == ENOENT)
          continue;
        r = -errno;
        break;
      }
      r = list_dir (d, sub, key, prefix, fn, opaque);
    }
    else if (S_ISREG (st.st_mode) &&
             strncmp (key, prefix, strlen (prefix)) == 0)
      r = fn (opaque, key, st.st_size);
  }
  if (r == 0 && errno != 0)
    r = -errno;
  closedir (dir);
  return r;
}

static int
dir_list (struct objstore *os, const char *prefix,
          objstore_list_fn fn, void *opaque)
{
  struct dirstore *d = (struct dirstore *) os;
  int fd, r;

  /* Not dup(): a duplicate shares the directory's read position. */
  fd = openat (d->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  r = list_dir (d, fd, "", prefix, fn, opaque);
  if (r < 0)
    cs_error ("list %s in %s: %s", prefix, d->root, strerror (-r));
  return r;
}

static void
dir_close (struct objstore *os)
{
  struct dirstore *d = (struct dirstore *) os;

  close (d->root_fd);
  free (d->root);
  free (d);
}

/* Another handle on the same directory; it shares nothing but the path
 * (put_if and delete serialise through the flock on DIR/.lock).
 */
static int
dir_sibling (struct objstore *os, struct objstore **out)
{
  struct dirstore *d = (struct dirstore *) os;

  return objstore_dir_open (d->root, false, out);
}

static const struct objstore_ops dir_ops = {
  .name = "dir",
  .sibling = dir_sibling,
  .get = dir_get,
  .put = dir_put,
  .put_if = dir_put_if,
  .del = dir_del,
  .del_many = dir_del_many,
  .list = dir_list,
  .close = dir_close,
};

int
objstore_dir_open (const char *path, bool create, struct objstore **out)
{
  struct dirstore *d;
  int fd;

  if (create && mkdir (path, 0755) < 0 && errno != EEXIST) {
    int e = errno;
    cs_error ("create directory %s: %s", path, strerror (e));
    return -e;
  }
  fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    cs_error ("open directory %s: %s%s", path, strerror (e),
              e == ENOENT ? ": create it, or check the dir= parameter" : "");
    return -e;
  }
  d = calloc (1, sizeof *d);
  if (d == NULL || (d->root = strdup (path)) == NULL) {
    free (d);
    close (fd);
    return -ENOMEM;
  }
  d->os.ops = &dir_ops;
  d->root_fd = fd;
  *out = &d->os;
  return 0;
}
