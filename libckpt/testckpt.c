/*
 * testckpt: the test program of seed 003 (the ZAP/DejaView in-pod
 * checkpoint, Columbia 2009), for sbuml.
 *
 *   testckpt [-m MESSAGE] FILE
 *
 * It calls ckpt() once. In the machine that took the checkpoint ckpt()
 * returns 0, and testckpt appends "I am the Parent" to FILE; in the N-th
 * machine checked out from the checkpoint it returns N, and testckpt
 * appends "I am the Child # N". It appends one such line at once and then
 * one a second, forever.
 */
#include "ckpt.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *msg = NULL;
	if (argc == 4 && strcmp(argv[1], "-m") == 0) {
		msg = argv[2];
		argv += 2;
		argc -= 2;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: testckpt [-m MESSAGE] FILE\n");
		return 2;
	}
	int id = ckpt_msg(msg);
	if (id < 0) {
		fprintf(stderr, "testckpt: ckpt: %s\n", ckpt_error());
		return 1;
	}
	for (;;) {
		FILE *f = fopen(argv[1], "a");
		if (f == NULL) {
			perror(argv[1]);
			return 1;
		}
		if (id == 0)
			fprintf(f, "I am the Parent\n");
		else
			fprintf(f, "I am the Child # %d\n", id);
		if (fclose(f) != 0) {
			perror(argv[1]);
			return 1;
		}
		sleep(1);
	}
}
