/* The benchmark's ceiling: the least an HTTP/1.1 keep-alive server can do
 * on this machine. One thread, epoll (level-triggered), a fixed 1 KiB
 * answer to every request head (pipelined heads too), no files, no logs,
 * no parsing beyond finding the empty line. Not a server: only loopback,
 * only for bench/run.py.
 *
 * usage: ceiling PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY 1024
static char resp[BODY + 256];
static int resp_len;

struct conn {
    int fd;
    int have; /* bytes of a partial head kept */
    char tail[4];
};

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ceiling PORT\n");
        return 2;
    }
    resp_len = snprintf(resp, sizeof resp,
                        "HTTP/1.1 200 OK\r\nServer: ceiling\r\nContent-Type: application/octet-stream\r\n"
                        "Content-Length: %d\r\n\r\n", BODY);
    memset(resp + resp_len, 'x', BODY);
    resp_len += BODY;

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) {
        perror("bind");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    static char buf[65536];
    static char out[sizeof resp * 64];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(c->fd);
                free(c);
                continue;
            }
            /* Count the heads that end in this read. */
            int answers = 0, olen = 0;
            for (ssize_t k = 0; k < r; k++) {
                c->tail[0] = c->tail[1];
                c->tail[1] = c->tail[2];
                c->tail[2] = c->tail[3];
                c->tail[3] = buf[k];
                if (!memcmp(c->tail, "\r\n\r\n", 4)) {
                    if (olen + resp_len > (int)sizeof out) {
                        if (write(c->fd, out, olen) < 0) break;
                        olen = 0;
                    }
                    memcpy(out + olen, resp, resp_len);
                    olen += resp_len;
                    answers++;
                }
            }
            if (olen && write(c->fd, out, olen) < 0) {
                close(c->fd);
                free(c);
            }
        }
    }
}
