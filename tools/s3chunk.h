/* s3chunk: the admin command (tools/).  One program, one subcommand per
 * file: s3chunk.c (main, the parameters and the helpers below), info.c,
 * fsck.c, lifecycle.c (create, grow, unlock, destroy), scan.c (what a
 * listing of the store holds) and progress.c (the progress bar).
 *
 * The store is named by the plugin's own key=value words (store-params.h),
 * so a command line can be copied from an nbdkit one.  Messages from the
 * library go to stderr as "s3chunk: COMMAND: ..." through cs_log_set.
 */
#ifndef S3CHUNK_TOOL_H
#define S3CHUNK_TOOL_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chunkstore.h"
#include "lock.h"
#include "objstore.h"
#include "store-params.h"

/* Exit statuses of every subcommand (fsck: 1 = problems found). */
#define EXIT_OK 0
#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* The lease of the lock the tools take while they write (grow, destroy):
 * the plugin's default, so a killed tool blocks a start for a minute.
 */
#define TOOL_LEASE 60

/* ------------------------------------------------------------ s3chunk.c */

extern const char *tool_cmd;            /* "info", ... for messages */
extern bool tool_verbose;               /* -v: library info and debug */
extern bool tool_mute_warnings;         /* the command said it already */
extern struct store_params tool_sp;     /* the store words */
extern struct objstore *tool_os;        /* after tool_open_store */
extern char tool_store_desc[512];       /* "dir /srv/v1", "s3://b/p at URL" */
extern struct cs_user_key tool_key;     /* key= / --key= (if tool_key_set) */
extern bool tool_key_set;
/* The command can work without the key of an encrypted volume (info,
 * fsck: headers only; destroy): set before tool_open_volume.
 */
extern bool tool_key_optional;

/* Take key=VALUE / --key=VALUE (+FILE, -FD, -; never a literal) or
 * key-format=.  0, or -1 reported.
 */
extern int tool_set_key (const char *param, const char *value);

/* One line to stderr: "s3chunk: CMD: ..." (clears a progress bar). */
extern void tool_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

/* Handle the words left after the options (argv[first..argc-1]): store
 * parameters go to tool_sp (secret-key=+FILE / - / -FD resolved); other
 * key=value words to param (which returns 1 if it does not know the key,
 * 0 taken, -1 bad value, reported); a word without "=" to word (NULL: an
 * error).  Then checks the store words (store_params_check).  Returns 0,
 * or -1 after reporting.
 */
typedef int (*tool_param_fn) (const char *key, const char *value);
typedef int (*tool_word_fn) (const char *word);
extern int tool_words (int argc, char **argv, int first,
                       tool_param_fn param, tool_word_fn word);

/* Open the store into tool_os (after tool_words).  create: a
 * missing directory may be made.  connections: parallel requests (S3).
 * 0, or -1 reported.
 */
extern int tool_open_store (bool create, unsigned connections);

/* Read the volume's superblock (read-only open).  -1 reported, with a
 * hint to 's3chunk create' when there is no volume.
 */
extern int tool_open_volume (struct cs_volume **out);

/* The volume id as 32 hex digits (buf of 33). */
extern void tool_volume_id (const struct cs_volume *v, char *buf);

/* Ask on the terminal (stdin): 1 for "y"/"yes" or, when expect is set,
 * for exactly that answer; 0 for another answer; -1 (reported: use --yes)
 * when stdin is not a terminal.
 */
extern int tool_confirm (const char *prompt, const char *expect);

/* Capture ERROR messages of the library logged by this thread into buf
 * (the last one wins) instead of printing them; NULL stops.
 */
extern void tool_capture (char *buf, size_t len);

/* Format seconds-since-epoch as "YYYY-MM-DD HH:MM:SS UTC". */
extern const char *tool_format_time (int64_t t, char *buf, size_t len);

/* --------------------------------------------------------- subcommands */

extern int cmd_create (int argc, char **argv);
extern int cmd_info (int argc, char **argv);
extern int cmd_grow (int argc, char **argv);
extern int cmd_fsck (int argc, char **argv);
extern int cmd_unlock (int argc, char **argv);
extern int cmd_destroy (int argc, char **argv);
extern int cmd_rekey (int argc, char **argv);

/* The usage text of each, printed by --help ("s3chunk CMD --help"). */
extern const char create_usage[], info_usage[], grow_usage[], fsck_usage[],
  unlock_usage[], destroy_usage[], rekey_usage[];

/* Print usage (with the store parameters) to stdout, exit 0. */
extern void tool_help (const char *usage) __attribute__ ((noreturn));

/* The options every subcommand takes, for its getopt_long table and loop
 * (optstring starts with ':' so that a missing argument is told apart).
 */
#define TOOL_COMMON_LONGOPTS \
  { "help", no_argument, NULL, 'h' }, \
  { "verbose", no_argument, NULL, 'v' }, \
  { "key", required_argument, NULL, 'K' }, \
  { "key-format", required_argument, NULL, 'F' }
#define TOOL_COMMON_SHORTOPTS ":hv"
#define TOOL_COMMON_CASES(usage, argv) \
  case 'h': tool_help (usage); \
  case 'v': tool_verbose = true; break; \
  case 'K': \
    if (tool_set_key ("--key", optarg) < 0) { return EXIT_USAGE; } \
    break; \
  case 'F': \
    if (tool_set_key ("--key-format", optarg) < 0) { return EXIT_USAGE; } \
    break; \
  default: tool_bad_option (argv, c); return EXIT_USAGE

/* Report the option getopt_long did not accept (c is what it returned). */
extern void tool_bad_option (char **argv, int c);

/* ---------------------------------------------------------------- scan.c
 * Everything a listing of the store holds, sorted by kind.  The directory
 * store hides its temporary files from the listing, so with dir= the
 * directory is walked as well.
 */
enum scan_kind {
  SCAN_BEYOND,          /* a chunk key at or beyond the volume's end */
  SCAN_PROBE,           /* lock-probe-*: left by an interrupted lock check */
  SCAN_TEMP,            /* dir store: *.tmp-* of an unfinished write (path
                           relative to the directory) */
  SCAN_FOREIGN,         /* not a key s3chunk writes */
  SCAN_NKINDS
};

struct scan_other {
  char *key;
  uint64_t size;
  enum scan_kind kind;
};

struct scan {
  uint64_t *chunks;             /* indexes of the chunk objects in range, */
  uint64_t *chunk_sizes;        /* sorted, and their object sizes */
  size_t nchunks, cap;
  uint64_t chunk_bytes;         /* sum of the chunk objects' sizes */
  struct scan_other *other;     /* sorted by key */
  size_t nother, ocap;
  size_t count[SCAN_NKINDS];
  bool superblock, lock;
  uint64_t volume_chunks;       /* the volume's chunk count (range) */
};

/* List the store (and walk dir if not NULL).  volume_chunks: chunk keys at
 * or beyond it are SCAN_BEYOND.  0, or -errno (reported).
 */
extern int scan_store (struct objstore *os, uint64_t volume_chunks,
                       const char *dir, struct scan *s);
extern void scan_free (struct scan *s);
extern const char *scan_kind_name (enum scan_kind k);

#endif /* S3CHUNK_TOOL_H */
