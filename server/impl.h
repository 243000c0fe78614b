/* SPDX-License-Identifier: MIT */
/*
 * impl.h - declarations private to server/: the subcommands of the `moed`
 * command line, each in its own file, dispatched from main.c.
 */
#ifndef MOED_SERVER_IMPL_H
#define MOED_SERVER_IMPL_H

#include <stddef.h>

/* Each returns the process exit code (0 ok, 1 failure, 2 usage error). */
int srv_cmd_bench(int argc, char **argv);
int srv_cmd_run(int argc, char **argv);
int srv_cmd_tokenize(int argc, char **argv);
int srv_cmd_detokenize(int argc, char **argv);
int srv_cmd_serve(int argc, char **argv);
int srv_cmd_template(int argc, char **argv);

/* Formats a byte count as "1.23 GiB". */
void srv_human_bytes(char *buf, size_t len, double bytes);

#endif
