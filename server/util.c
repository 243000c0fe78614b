/* SPDX-License-Identifier: MIT */
/*
 * util.c - small helpers shared by the server's subcommands.
 */
#include "server/impl.h"

#include <stdio.h>

void srv_human_bytes(char *buf, size_t len, double bytes)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024 && i < 4) {
        bytes /= 1024;
        i++;
    }
    snprintf(buf, len, i ? "%.2f %s" : "%.0f %s", bytes, u[i]);
}
