/* s3chunk tests: preloaded into nbdkit next to the ASan runtime when the
 * plugin is built with --enable-sanitizers (tests/functions.sh).
 *
 * Why.  nbdkit is not instrumented, so the ASan runtime comes in by
 * LD_PRELOAD, and the dynamic linker runs its constructor after those of
 * nbdkit's own libraries.  The first malloc before that initialises ASan
 * lazily -- on Debian 12 inside libp11-kit's constructor (pulled in by
 * gnutls), in newlocale(), while glibc's __libc_setlocale_lock is held for
 * writing.  ASan's initialisation looks up swift_demangle with dlsym(),
 * which fails, and the dlerror() that clears the failure translates its
 * message with dcgettext(), which takes and releases the same lock: the
 * lock is left corrupted.  From then on, once anything translates a
 * message (strerror: every "%m" in an error), nbdkit hangs at exit in
 * libp11-kit's destructor (freelocale waits for the lock for ever).
 *
 * Defining swift_demangle makes that dlsym() succeed, so there is no
 * dlerror() message, no dcgettext() and no damage.  ASan only calls it to
 * demangle Swift symbols in reports; "not demangled" is the right answer.
 */
#include <stddef.h>
#include <stdint.h>

char *swift_demangle (const char *mangled, size_t mangled_len, char *out,
                      size_t *out_len, uint32_t flags);

char *
swift_demangle (const char *mangled, size_t mangled_len, char *out,
                size_t *out_len, uint32_t flags)
{
  return NULL;
}
