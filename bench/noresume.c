/* Preloaded into wrk by bench/tls.py: every reconnect makes a full TLS
 * handshake. wrk reuses one SSL object per connection and calls SSL_clear
 * before reconnecting, which keeps the session, so nearly every new
 * connection resumes. Dropping the session after SSL_clear forces a full
 * handshake each time: the server's CPU per handshake is then what is
 * measured.
 *
 *   gcc -O2 -shared -fPIC -o noresume.so noresume.c -ldl
 *   LD_PRELOAD=./noresume.so wrk ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_clear(SSL *s) {
    static int (*real_clear)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);
    if (!real_clear) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    int r = real_clear(s);
    if (set_session) {
        set_session(s, NULL);
    }
    return r;
}
