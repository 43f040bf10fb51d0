/* buntime_ipc.h: C ABI of libbuntime_ipc.so, the worker-side client of the
 * buntime IPC layer (see docs/ipc.md).
 *
 * All functions return >= 0 on success and -1 on error; bi_last_error()
 * then describes the error (thread-local, valid until the next call).
 * A handle must not be used by two threads at once. */
#ifndef BUNTIME_IPC_H
#define BUNTIME_IPC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Message types (first payload byte on the ring): src/protocol.rs's,
 * checked by tests/worker_constants.rs. */
#define BI_STDOUT      0x00
#define BI_FS_READ     0x01
#define BI_FS_WRITE    0x02
#define BI_NET_CONNECT 0x03
#define BI_EXEC        0x04
#define BI_LISTDIR     0x05
#define BI_STDERR      0x06
#define BI_EXIT        0x07
#define BI_ALLOW       0x10
#define BI_DENY        0x11

typedef struct BiClient bi_client;

/* Connect and handshake. control_path NULL: use $BUNTIME_CONTROL.
 * Returns NULL on error. */
bi_client *bi_connect(const char *control_path);

/* Take over a connection whose handshake the caller made (HELLO, WELCOME,
 * READY; docs/ipc.md): the control socket, the segment fd from WELCOME, the
 * chosen version and WELCOME's flags word. The handle owns both fds from
 * then on (closed on error too). Returns NULL on error. */
bi_client *bi_adopt(int control_fd, int segment_fd, uint16_t version,
                    uint32_t welcome_flags);

/* Spin this many microseconds before sleeping on the futex (default 50). */
int bi_set_spin_us(bi_client *c, uint32_t spin_us);

/* Bound every blocking call (0 = wait while the supervisor lives). */
int bi_set_timeout_ms(bi_client *c, uint64_t timeout_ms);

/* Unsolicited message: BI_STDOUT / BI_STDERR (split if large) or BI_EXIT
 * (data = 4-byte little-endian exit code). */
int bi_send(bi_client *c, uint8_t kind, const uint8_t *data, size_t len);

/* Send a request (body format per type, docs/ipc.md); returns its id > 0. */
int64_t bi_send_request(bi_client *c, uint8_t kind, const uint8_t *body, size_t len);

/* Wait for the reply to request `id`. *out_kind gets BI_ALLOW or BI_DENY,
 * `out` up to `cap` bytes of the body (ALLOW data / DENY reason), *out_fd
 * the passed descriptor or -1 (the caller owns and must close it). Any
 * out-pointer may be NULL. Returns the full body length (> cap means the
 * copy was truncated). */
int64_t bi_recv(bi_client *c, uint32_t id, uint8_t *out_kind, uint8_t *out,
                size_t cap, int *out_fd);

/* bi_send_request + bi_recv. */
int64_t bi_request(bi_client *c, uint8_t kind, const uint8_t *body, size_t len,
                   uint8_t *out_kind, uint8_t *out, size_t cap, int *out_fd);

/* Send STOP and free the handle. */
int bi_close(bi_client *c);

const char *bi_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* BUNTIME_IPC_H */
