/* s3chunk: scope-based cleanup, so error paths cannot leak.
 *
 * The same idea as nbdkit's common/utils/cleanup.h (GCC/Clang's cleanup
 * attribute), written for this project.
 */
#ifndef S3CHUNK_CLEANUP_H
#define S3CHUNK_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>

static inline void
cs_cleanup_free (void *ptr)
{
  free (*(void **) ptr);
}
#define CLEANUP_FREE __attribute__ ((cleanup (cs_cleanup_free)))

static inline void
cs_cleanup_unlock (pthread_mutex_t **mp)
{
  if (*mp)
    pthread_mutex_unlock (*mp);
}

#define CS_CONCAT_(a, b) a##b
#define CS_CONCAT(a, b) CS_CONCAT_ (a, b)

/* Lock m now and unlock it when the enclosing scope ends. */
#define ACQUIRE_LOCK_FOR_CURRENT_SCOPE(m)                               \
  __attribute__ ((cleanup (cs_cleanup_unlock)))                         \
  pthread_mutex_t *CS_CONCAT (cs_lock_, __LINE__) = (m);                \
  pthread_mutex_lock (CS_CONCAT (cs_lock_, __LINE__))

#endif /* S3CHUNK_CLEANUP_H */
