/* bench/gen-access-log: write SIZE bytes of web-server access log text
 * (Apache/nginx "combined" format) to stdout, the same bytes for the same
 * SEED on every machine (own PRNG, no locale, no clock).
 *
 *   gen-access-log SIZE [SEED]
 *
 * The mix (a few thousand client addresses with a heavy head, URL templates
 * with numeric ids and query strings, a few dozen user agents, response sizes
 * and request times) is tuned so that zstd -1 shrinks it about 8 times, like
 * real logs.  The output is cut at exactly SIZE bytes (the last line may be
 * partial). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static uint64_t
rnd (void)                      /* splitmix64 */
{
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static unsigned
below (unsigned n)
{
  return (unsigned) (rnd () % n);
}

/* Heavy head: small values much more often (a rough Zipf). */
static unsigned
skewed (unsigned n)
{
  double u = (double) (rnd () >> 11) / 9007199254740992.0;
  return (unsigned) (n * u * u * u) % n;
}

#define N(a) (sizeof (a) / sizeof (a)[0])

static const char *agents[] = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/119.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:109.0) Gecko/20100101 Firefox/120.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.5993.111 Mobile Safari/537.36",
  "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 Edg/119.0.2151.72",
  "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
  "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
  "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
  "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
  "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.159 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
  "curl/7.88.1",
  "python-requests/2.31.0",
  "Go-http-client/1.1",
  "Wget/1.21.3",
  "Prometheus/2.45.0",
  "kube-probe/1.28",
  "Apache-HttpClient/4.5.14 (Java/17.0.9)",
  "okhttp/4.12.0",
  "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
  "Twitterbot/1.0",
  "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
};

static const char *statics[] = {
  "/static/css/main.4f1c2a9e.css", "/static/js/app.8d3e1b07.js",
  "/static/js/vendor.c21f9a44.js", "/static/img/logo.svg",
  "/static/img/hero-banner.webp", "/static/fonts/inter-var.woff2",
  "/favicon.ico", "/robots.txt", "/sitemap.xml", "/manifest.json",
  "/apple-touch-icon.png", "/static/js/runtime.0b7e55d1.js",
};

static const char *words[] = {
  "shoes", "laptop", "coffee", "garden", "chair", "lamp", "phone", "case",
  "cable", "usb-c", "charger", "jacket", "boots", "tent", "bike", "helmet",
  "watch", "camera", "lens", "tripod", "desk", "monitor", "keyboard",
  "mouse", "headphones", "speaker", "book", "kindle", "sofa", "rug",
  "pillow", "blanket", "mug", "kettle", "toaster", "blender", "knife",
  "pan", "pot", "grill", "drill", "saw", "hammer", "paint", "brush",
};

static const char *sections[] = {
  "products", "category", "blog", "help", "account", "cart", "checkout",
  "search", "api/v1/items", "api/v1/users", "api/v2/orders", "news",
};

static const char *months[] = {
  "Jan", "Feb", "Mar", "Apr", "May", "Jun",
  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static unsigned ip_pool[2500];

int
main (int argc, char **argv)
{
  if (argc < 2 || argc > 3) {
    fprintf (stderr, "usage: %s SIZE [SEED]\n", argv[0]);
    return 2;
  }
  unsigned long long size = strtoull (argv[1], NULL, 0);
  rng_state = argc > 2 ? strtoull (argv[2], NULL, 0) : 1;
  for (size_t i = 0; i < N (ip_pool); ++i)
    ip_pool[i] = (unsigned) rnd ();

  static char out[1 << 20];
  static char line[2048];
  size_t used = 0;
  unsigned long long written = 0;
  /* 2023-11-01 00:00:00 UTC, advanced by a few ms per request. */
  unsigned long long t_ms = 0;
  unsigned day = 1, mon = 10, year = 2023;
  static const unsigned mdays[] = { 31,28,31,30,31,30,31,31,30,31,30,31 };

  while (written < size) {
    t_ms += below (40);
    if (t_ms >= 86400000ULL) {
      t_ms -= 86400000ULL;
      if (++day > mdays[mon]) { day = 1; if (++mon == 12) { mon = 0; year++; } }
    }
    unsigned s = (unsigned) (t_ms / 1000);
    unsigned ip = ip_pool[skewed (N (ip_pool))];
    const char *method = "GET";
    unsigned r = below (100);
    if (r >= 97) method = "HEAD";
    else if (r >= 88) method = "POST";

    char path[512];
    unsigned kind = below (10);
    if (kind < 4)
      snprintf (path, sizeof path, "%s", statics[skewed (N (statics))]);
    else if (kind < 7)
      snprintf (path, sizeof path, "/%s/%u", sections[skewed (N (sections))],
                skewed (100000));
    else if (kind < 8)
      snprintf (path, sizeof path, "/search?q=%s+%s&page=%u",
                words[below (N (words))], words[below (N (words))],
                1 + skewed (20));
    else if (kind < 9)
      snprintf (path, sizeof path, "/%s/%u/reviews?sort=%s&limit=%u",
                sections[skewed (N (sections))], skewed (50000),
                below (2) ? "newest" : "rating", 10 * (1 + below (5)));
    else
      snprintf (path, sizeof path, "/api/v1/session/%08x/events?since=%llu",
                (unsigned) rnd (), 1698796800000ULL + t_ms - below (60000));

    unsigned status = 200;
    r = below (1000);
    if (r < 120) status = 304;
    else if (r < 150) status = 404;
    else if (r < 160) status = 301;
    else if (r < 163) status = 500;
    else if (r < 166) status = 403;
    unsigned bytes = status == 304 ? 0 : status == 301 ? 162 :
      status >= 400 ? 153 + below (400) : 200 + skewed (120000);

    char referer[256];
    if (below (3) == 0)
      snprintf (referer, sizeof referer, "-");
    else if (below (4) == 0)
      snprintf (referer, sizeof referer, "https://www.google.com/");
    else
      snprintf (referer, sizeof referer, "https://shop.example.com/%s/%u",
                sections[skewed (N (sections))], skewed (20000));

    int n = snprintf (line, sizeof line,
                      "%u.%u.%u.%u - - [%02u/%s/%u:%02u:%02u:%02u +0000] "
                      "\"%s %s HTTP/%s\" %u %u \"%s\" \"%s\" rt=%u.%03u\n",
                      ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255,
                      day, months[mon], year, s / 3600, s / 60 % 60, s % 60,
                      method, path, below (5) ? "1.1" : "2.0", status, bytes,
                      referer, agents[skewed (N (agents))],
                      skewed (3), below (1000));
    if (n < 0 || (size_t) n >= sizeof line)
      abort ();
    if (written + n > size)
      n = (int) (size - written);
    if (used + n > sizeof out) {
      if (fwrite (out, 1, used, stdout) != used) { perror ("write"); return 1; }
      used = 0;
    }
    memcpy (out + used, line, n);
    used += n;
    written += n;
  }
  if (fwrite (out, 1, used, stdout) != used || fflush (stdout) != 0) {
    perror ("write");
    return 1;
  }
  return 0;
}
