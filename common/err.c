/* SPDX-License-Identifier: MIT */
/*
 * err.c - names and descriptions for moed's error codes and for -errno values.
 */
#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *err_name(int code)
{
    switch (code) {
#define ERR_NAME(name, val, str) case ERR_##name: return "ERR_" #name;
        ERR_MAP(ERR_NAME)
#undef ERR_NAME
    case 0: return "OK";
    case -ENOENT: return "ENOENT";
    case -ENOMEM: return "ENOMEM";
    case -EINVAL: return "EINVAL";
    case -EIO: return "EIO";
    case -EACCES: return "EACCES";
    case -EAGAIN: return "EAGAIN";
    case -ENOSPC: return "ENOSPC";
    case -EBADF: return "EBADF";
    case -ERANGE: return "ERANGE";
    case -ENOSYS: return "ENOSYS";
    case -EEXIST: return "EEXIST";
    case -EISDIR: return "EISDIR";
    default: return "EUNKNOWN";
    }
}

const char *err_str(int code)
{
    switch (code) {
#define ERR_STR(name, val, str) case ERR_##name: return str;
        ERR_MAP(ERR_STR)
#undef ERR_STR
    case 0: return "success";
    default:
        if (code < 0 && code > -4096)
            return strerror(-code);
        return "unknown error";
    }
}
