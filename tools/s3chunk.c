/* s3chunk: the admin command.  main, the store words, and the helpers the
 * subcommands share (s3chunk.h).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "progress.h"
#include "s3chunk.h"

const char *tool_cmd = NULL;
bool tool_verbose = false;
bool tool_mute_warnings = false;
struct store_params tool_sp = STORE_PARAMS_INIT;
struct objstore *tool_os = NULL;
char tool_store_desc[512] = "";
struct cs_user_key tool_key;
bool tool_key_set = false;
bool tool_key_optional = false;

int
tool_set_key (const char *param, const char *value)
{
  if (strcmp (param, "key-format") == 0 ||
      strcmp (param, "--key-format") == 0) {
    enum crypt_key_format f;
    if (crypt_key_format_parse (param, value, &f) < 0)
      return -1;
    tool_key.format = f;
    return 0;
  }
  if (crypt_key_read (param, value, &tool_key) < 0)
    return -1;
  tool_key_set = true;
  return 0;
}

/* ---------------------------------------------------------------- messages */

static __thread char *capture_buf;
static __thread size_t capture_len;

void
tool_capture (char *buf, size_t len)
{
  capture_buf = buf;
  capture_len = len;
  if (buf && len)
    buf[0] = '\0';
}

static void
tool_log (enum cs_log_level level, const char *msg)
{
  static const char *const prefix[] = {
    [CS_LOG_ERROR] = "", [CS_LOG_WARN] = "warning: ",
    [CS_LOG_INFO] = "", [CS_LOG_DEBUG] = "debug: ",
  };

  if (level == CS_LOG_ERROR && capture_buf) {
    snprintf (capture_buf, capture_len, "%s", msg);
    return;
  }
  if (level >= CS_LOG_INFO && !tool_verbose)
    return;
  if (level == CS_LOG_WARN && tool_mute_warnings && !tool_verbose)
    return;
  progress_printf (stderr, "s3chunk: %s%s%s%s\n", tool_cmd ? tool_cmd : "",
                   tool_cmd ? ": " : "", prefix[level], msg);
}

void
tool_error (const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  progress_printf (stderr, "s3chunk: %s%s%s\n", tool_cmd ? tool_cmd : "",
                   tool_cmd ? ": " : "", msg);
}

const char *
tool_format_time (int64_t t, char *buf, size_t len)
{
  time_t tt = t;
  struct tm tm;

  if (t <= 0 || gmtime_r (&tt, &tm) == NULL)
    snprintf (buf, len, "unknown");
  else
    strftime (buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

/* ------------------------------------------------------------- secrets */

/* Read all of fd (at most 64 KiB) into a string. */
static int
read_fd (int fd, char **out)
{
  size_t len = 0, cap = 4096;
  char *s = malloc (cap);
  ssize_t n;

  if (s == NULL)
    return -ENOMEM;
  for (;;) {
    if (len + 1 >= cap) {
      char *t;
      if (cap >= 65536) {
        free (s);
        return -EFBIG;
      }
      t = realloc (s, cap *= 2);
      if (t == NULL) {
        free (s);
        return -ENOMEM;
      }
      s = t;
    }
    n = read (fd, s + len, cap - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      free (s);
      return -e;
    }
    if (n == 0)
      break;
    len += n;
  }
  s[len] = '\0';
  *out = s;
  return 0;
}

static void
chomp (char *s)
{
  size_t n = strlen (s);

  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
    s[--n] = '\0';
}

/* A secret as the plugin takes it (nbdkit's password convention): the
 * value itself, +FILE (the file's content), - (a line from stdin, not
 * echoed on a terminal) or -FD (the content of an open file descriptor).
 * A trailing newline is removed.  0, or -1 reported.
 */
static int
read_secret (const char *key, const char *value, char **out)
{
  char *s = NULL;
  int r;

  if (value[0] == '+') {
    int fd = open (value + 1, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      tool_error ("%s=%s: %s", key, value, strerror (errno));
      return -1;
    }
    r = read_fd (fd, &s);
    close (fd);
    if (r < 0) {
      tool_error ("%s=%s: read: %s", key, value, strerror (-r));
      return -1;
    }
  }
  else if (strcmp (value, "-") == 0) {
    struct termios old, quiet;
    bool tty = isatty (STDIN_FILENO) && tcgetattr (STDIN_FILENO, &old) == 0;
    size_t cap = 0;
    ssize_t n;

    if (tty) {
      fprintf (stderr, "%s: ", key);
      fflush (stderr);
      quiet = old;
      quiet.c_lflag &= ~ECHO;
      tcsetattr (STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    n = getline (&s, &cap, stdin);
    if (tty) {
      tcsetattr (STDIN_FILENO, TCSAFLUSH, &old);
      fputc ('\n', stderr);
    }
    if (n < 0) {
      free (s);
      tool_error ("%s=-: no line to read on stdin", key);
      return -1;
    }
  }
  else if (value[0] == '-' && value[1] != '\0' &&
           strspn (value + 1, "0123456789") == strlen (value + 1)) {
    int fd = atoi (value + 1);
    r = read_fd (fd, &s);
    if (r < 0) {
      tool_error ("%s=%s: read file descriptor %d: %s", key, value, fd,
                  strerror (-r));
      return -1;
    }
  }
  else
    s = strdup (value);
  if (s == NULL) {
    tool_error ("%s: out of memory", key);
    return -1;
  }
  chomp (s);
  if (*s == '\0') {
    free (s);
    tool_error ("%s=%s: the secret is empty", key, value);
    return -1;
  }
  *out = s;
  return 0;
}

/* ----------------------------------------------------------------- words */

/* Parameters of the plugin that have no meaning for the tools: named as
 * such, so that a copied nbdkit command line gets a clear answer.
 */
static const char *const plugin_only[] = {
  "cache-size", "connections", "upload-delay", "readahead", "lock",
  "lease", "force-unlock", NULL,
};

int
tool_words (int argc, char **argv, int first, tool_param_fn param,
            tool_word_fn word)
{
  int i, r;

  for (i = first; i < argc; ++i) {
    const char *w = argv[i], *eq = strchr (w, '=');
    char key[64];

    if (eq == NULL) {
      if (word && (r = word (w)) <= 0) {
        if (r < 0)
          return -1;
        continue;
      }
      tool_error ("unexpected word '%s': parameters are key=value, "
                  "see 's3chunk %s --help'", w, tool_cmd);
      return -1;
    }
    if ((size_t) (eq - w) >= sizeof key || eq == w) {
      tool_error ("unknown parameter '%.*s': see 's3chunk %s --help'",
                  (int) (eq - w), w, tool_cmd);
      return -1;
    }
    memcpy (key, w, eq - w);
    key[eq - w] = '\0';

    if (strcmp (key, "key") == 0 || strcmp (key, "key-format") == 0) {
      if (tool_set_key (key, eq + 1) < 0)
        return -1;
      continue;
    }
    if (strcmp (key, "secret-key") == 0 ||
        strcmp (key, "session-token") == 0) {
      char *secret;
      if (read_secret (key, eq + 1, &secret) < 0)
        return -1;
      r = store_params_set (&tool_sp, key, secret);
      memset (secret, 0, strlen (secret));
      free (secret);
    }
    else
      r = store_params_set (&tool_sp, key, eq + 1);
    if (r < 0)
      return -1;                /* logged */
    if (r == 0)
      continue;
    if (param) {
      r = param (key, eq + 1);
      if (r < 0)
        return -1;
      if (r == 0)
        continue;
    }
    for (size_t k = 0; plugin_only[k]; ++k)
      if (strcmp (key, plugin_only[k]) == 0) {
        tool_error ("%s= is a parameter of the nbdkit plugin, not of "
                    "'s3chunk %s': leave it out", key, tool_cmd);
        return -1;
      }
    tool_error ("unknown parameter '%s': see 's3chunk %s --help'",
                key, tool_cmd);
    return -1;
  }
  if (tool_key.format != CRYPT_FORMAT_UNSET && !tool_key_set) {
    tool_error ("key-format= without a key: add --key=+FILE");
    return -1;
  }
  /* Exactly one store, S3 options only with bucket=, key pairs. */
  if (store_params_check (&tool_sp) < 0)
    return -1;
  return 0;
}

/* ------------------------------------------------------------ the store */

int
tool_open_store (bool create, unsigned connections)
{
  struct stat st;

  store_params_describe (&tool_sp, tool_store_desc, sizeof tool_store_desc);
  if (tool_sp.dir && !create && stat (tool_sp.dir, &st) < 0 &&
      errno == ENOENT) {
    tool_error ("dir=%s: no such directory, so no volume there",
                tool_sp.dir);
    return -1;
  }
  if (store_params_open (&tool_sp, connections, create, &tool_os) < 0)
    return -1;
  return 0;
}

int
tool_open_volume (struct cs_volume **out)
{
  struct cs_buf b = CS_BUF_INIT;
  struct objstore_info info;
  struct cs_volume *v;
  int r;

  /* Not cs_volume_open: the tools never need the allocation map, which
   * for a huge volume of small chunks is gigabytes.
   */
  r = objstore_get (tool_os, CS_SUPERBLOCK_KEY, 65536, &b, &info);
  if (r == -ENOENT) {
    tool_error ("no volume in %s (no %s object): create one with "
                "'s3chunk create ... size=SIZE'", tool_store_desc,
                CS_SUPERBLOCK_KEY);
    return -1;
  }
  if (r < 0) {
    cs_buf_free (&b);
    return -1;                  /* the store said why */
  }
  v = calloc (1, sizeof *v);
  if (v == NULL) {
    cs_buf_free (&b);
    tool_error ("out of memory");
    return -1;
  }
  v->os = tool_os;
  r = cs_superblock_parse (CS_SUPERBLOCK_KEY, b.data, b.len, v);
  if (r == 0)
    r = cs_volume_check_key (v, tool_key_set ? &tool_key : NULL,
                             tool_key_optional, b.data, b.len);
  cs_buf_free (&b);
  if (r < 0) {
    cs_volume_close (v);
    return -1;                  /* the parser said why */
  }
  /* cs_volume_grow replaces the superblock only if it is still this one. */
  snprintf (v->etag, sizeof v->etag, "%s", info.etag);
  *out = v;
  return 0;
}

void
tool_volume_id (const struct cs_volume *v, char *buf)
{
  for (int i = 0; i < CODEC_VOLUME_ID_SIZE; ++i)
    snprintf (buf + 2 * i, 3, "%02x", v->volume_id[i]);
}

int
tool_confirm (const char *prompt, const char *expect)
{
  char *line = NULL;
  size_t cap = 0;
  int ok;

  if (!isatty (STDIN_FILENO)) {
    tool_error ("not asking for confirmation: stdin is not a terminal: "
                "add --yes");
    return -1;
  }
  fprintf (stderr, "%s", prompt);
  fflush (stderr);
  if (getline (&line, &cap, stdin) < 0) {
    free (line);
    fputc ('\n', stderr);
    return 0;
  }
  chomp (line);
  if (expect)
    ok = strcmp (line, expect) == 0;
  else
    ok = strcasecmp (line, "y") == 0 || strcasecmp (line, "yes") == 0;
  free (line);
  return ok;
}

/* ------------------------------------------------------------------ main */

static const struct command {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *summary;
} commands[] = {
  { "create", cmd_create, "Create a volume (size=SIZE, chunk size, compression)." },
  { "info", cmd_info, "Geometry, lock holder, objects and space used." },
  { "grow", cmd_grow, "Grow a volume (a served one by its nbdkit)." },
  { "fsck", cmd_fsck, "Read and check every object (reports, never repairs)." },
  { "unlock", cmd_unlock, "Remove the lock left by a crashed nbdkit." },
  { "destroy", cmd_destroy, "Delete every object of a volume." },
  { "rekey", cmd_rekey, "Replace the key of an encrypted volume." },
};

static void
usage (FILE *fp)
{
  size_t i;

  fprintf (fp,
           "Usage: s3chunk [--verbose] COMMAND [OPTION...] STORE-PARAMETER...\n"
           "       s3chunk COMMAND --help\n"
           "       s3chunk --version\n"
           "\n"
           "Manage the volumes of nbdkit-s3chunk-plugin(1) without nbdkit.  The store\n"
           "is named with the plugin's own key=value parameters, e.g.\n"
           "  s3chunk info dir=/srv/v1\n"
           "  s3chunk create bucket=b prefix=p endpoint=https://... size=1T\n"
           "\n"
           "Commands:\n");
  for (i = 0; i < sizeof commands / sizeof commands[0]; ++i)
    fprintf (fp, "  %-9s%s\n", commands[i].name, commands[i].summary);
  fprintf (fp,
           "\n"
           "Options:\n"
           "  -v, --verbose    Show the library's informational and debug messages.\n"
           "  -h, --help       This help.\n"
           "  -V, --version    Print the version.\n"
           "\n"
           "Store parameters:\n%s"
           "\n"
           "Exit status: 0 success, 1 failure (fsck: problems found), 2 usage error\n"
           "(fsck: could not check).  See s3chunk(1).\n",
           STORE_PARAMS_HELP);
}

void
tool_help (const char *text)
{
  printf ("%s\nStore parameters (as for the plugin):\n%s"
          "\nEncrypted volumes (every command):\n"
          "key=+FILE | --key=+FILE  The volume's key: +FILE, - (stdin) or -FD,\n"
          "                      never the key itself on the command line.\n"
          "key-format=passphrase|raw  How create reads it (default passphrase).\n",
          text, STORE_PARAMS_HELP);
  exit (EXIT_OK);
}

void
tool_bad_option (char **argv, int c)
{
  const char *w = argv[optind - 1];

  if (c == ':')
    tool_error ("option '%s' needs a value: see 's3chunk %s --help'",
                w, tool_cmd);
  else if (optopt && w[0] == '-' && w[1] != '-')
    tool_error ("unknown option '-%c': see 's3chunk %s --help'",
                optopt, tool_cmd);
  else
    tool_error ("unknown option '%s': see 's3chunk %s --help'",
                w, tool_cmd);
}

static void
cleanup (void)
{
  crypt_key_free (&tool_key);
  if (tool_os) {
    objstore_close (tool_os);
    tool_os = NULL;
  }
  store_params_free (&tool_sp);
}

int
main (int argc, char **argv)
{
  int i, r;
  size_t c;

  cs_log_set (tool_log);
  for (i = 1; i < argc && argv[i][0] == '-'; ++i) {
    const char *a = argv[i];
    if (strcmp (a, "-h") == 0 || strcmp (a, "--help") == 0) {
      usage (stdout);
      return EXIT_OK;
    }
    if (strcmp (a, "-V") == 0 || strcmp (a, "--version") == 0) {
      printf ("s3chunk %s\n", PACKAGE_VERSION);
      return EXIT_OK;
    }
    if (strcmp (a, "-v") == 0 || strcmp (a, "--verbose") == 0)
      tool_verbose = true;
    else {
      fprintf (stderr, "s3chunk: unknown option '%s': see 's3chunk --help'\n",
               a);
      return EXIT_USAGE;
    }
  }
  if (i == argc) {
    usage (stderr);
    return EXIT_USAGE;
  }
  for (c = 0; c < sizeof commands / sizeof commands[0]; ++c)
    if (strcmp (argv[i], commands[c].name) == 0)
      break;
  if (c == sizeof commands / sizeof commands[0]) {
    fprintf (stderr, "s3chunk: unknown command '%s': expected create, info, "
             "grow, fsck, unlock, destroy or rekey (see 's3chunk --help')\n",
             argv[i]);
    return EXIT_USAGE;
  }
  tool_cmd = commands[c].name;
  atexit (cleanup);
  r = commands[c].run (argc - i, argv + i);
  return r;
}
