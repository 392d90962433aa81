/*
 * ckpt.c: the client side of the sbuml-guest local protocol for ckpt().
 *
 * Request: "ckpt" [" " MESSAGE] "\n", with "\\" for a backslash and "\n"
 * for a newline in MESSAGE. Reply: "ok N\n" or "err TEXT\n".
 */
#include "ckpt.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/sbuml-guest.sock"

static __thread char last_error[512];

const char *ckpt_error(void)
{
	return last_error;
}

/* fail records a description of the failure and returns -1 with errno
 * set to err. */
static int fail(int err, const char *what)
{
	snprintf(last_error, sizeof last_error, "%s: %s", what, strerror(err));
	errno = err;
	return -1;
}

/* request builds the request line for msg into buf, which holds
 * 2*CKPT_MAX_MESSAGE+7 bytes, and returns its length. */
static size_t request(char *buf, const char *msg)
{
	size_t n = 0;
	memcpy(buf, "ckpt", 4);
	n = 4;
	if (msg != NULL && *msg != '\0') {
		buf[n++] = ' ';
		for (const char *p = msg; *p != '\0'; p++) {
			if (*p == '\\') {
				buf[n++] = '\\';
				buf[n++] = '\\';
			} else if (*p == '\n') {
				buf[n++] = '\\';
				buf[n++] = 'n';
			} else {
				buf[n++] = *p;
			}
		}
	}
	buf[n++] = '\n';
	return n;
}

/* dial connects to the daemon's socket. */
static int dial(void)
{
	const char *path = getenv("SBUML_GUEST_SOCKET");
	if (path == NULL || *path == '\0')
		path = DEFAULT_SOCKET;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof addr.sun_path)
		return fail(ENAMETOOLONG, path);
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(errno, "socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		int err = errno;
		close(fd);
		snprintf(last_error, sizeof last_error,
			 "connect to the sbuml-guest daemon at %s: %s; is it running?", path, strerror(err));
		errno = err;
		return -1;
	}
	return fd;
}

/* exchange sends the request and reads the reply line into reply. */
static int exchange(int fd, const char *req, size_t len, char *reply, size_t size)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
		if (n < 0)
			return fail(errno, "send the request to the sbuml-guest daemon");
		off += (size_t)n;
	}
	size_t got = 0;
	while (got == 0 || reply[got - 1] != '\n') {
		if (got == size - 1)
			return fail(EPROTO, "the sbuml-guest daemon's reply is too long");
		ssize_t n = read(fd, reply + got, size - 1 - got);
		if (n < 0)
			return fail(errno, "wait for the host's answer");
		if (n == 0)
			return fail(ECONNRESET, "the sbuml-guest daemon closed the connection");
		got += (size_t)n;
	}
	reply[got - 1] = '\0';
	return 0;
}

/* parse turns a reply line into ckpt's result. */
static int parse(const char *reply)
{
	if (strncmp(reply, "ok ", 3) == 0) {
		char *end;
		errno = 0;
		long v = strtol(reply + 3, &end, 10);
		if (errno == 0 && *end == '\0' && end != reply + 3 && v >= 0 && v <= INT_MAX)
			return (int)v;
	} else if (strncmp(reply, "err ", 4) == 0) {
		snprintf(last_error, sizeof last_error, "%.500s", reply + 4);
		errno = EIO;
		return -1;
	}
	snprintf(last_error, sizeof last_error, "bad reply from the sbuml-guest daemon: %.200s", reply);
	errno = EPROTO;
	return -1;
}

int ckpt_msg(const char *msg)
{
	static const size_t max = 2 * CKPT_MAX_MESSAGE + 7;
	if (msg != NULL && strlen(msg) > CKPT_MAX_MESSAGE)
		return fail(EMSGSIZE, "ckpt message");
	char *req = malloc(max);
	if (req == NULL)
		return fail(ENOMEM, "ckpt");
	size_t len = request(req, msg);
	char reply[1024];
	int fd = dial();
	int r = fd;
	if (fd >= 0) {
		r = exchange(fd, req, len, reply, sizeof reply);
		int err = errno;
		close(fd);
		errno = err;
		if (r == 0)
			r = parse(reply);
	}
	free(req);
	return r;
}

int ckpt(void)
{
	return ckpt_msg(NULL);
}
