/*
 * ckpt.h: checkpoint a sbuml machine from inside it.
 *
 * ckpt() asks the sbuml-guest daemon of the machine to have the host take
 * a snapshot of the whole running machine (a checkpoint), and returns
 * once the host has answered:
 *
 *   0    in the machine that took the checkpoint (the parent),
 *   N>0  in the N-th machine later checked out from that checkpoint,
 *        where the same call returns again, with N,
 *   -1   on failure, with errno set; ckpt_error() describes it.
 *
 * It blocks as long as the host takes, with no timeout. A signal whose
 * handler was installed without SA_RESTART interrupts it: it then returns
 * -1 with errno EINTR and the request is withdrawn.
 *
 * The daemon listens on /run/sbuml-guest.sock, or on the path in the
 * environment variable SBUML_GUEST_SOCKET. The protocol is described in
 * libckpt/README.md and docs/agent.md.
 */
#ifndef SBUML_CKPT_H
#define SBUML_CKPT_H

#ifdef __cplusplus
extern "C" {
#endif

/* The longest message ckpt_msg accepts, in bytes. */
#define CKPT_MAX_MESSAGE 4096

/* ckpt takes a checkpoint; see above. */
int ckpt(void);

/* ckpt_msg takes a checkpoint recorded with a message (any bytes but NUL,
 * at most CKPT_MAX_MESSAGE of them; NULL or "" for none). Errors as ckpt,
 * and EMSGSIZE for a message too long. */
int ckpt_msg(const char *msg);

/* ckpt_error describes the last failure of ckpt or ckpt_msg in the
 * calling thread, such as the host's reason for refusing. */
const char *ckpt_error(void);

#ifdef __cplusplus
}
#endif

#endif
