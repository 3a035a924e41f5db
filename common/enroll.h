/* The `enroll` command of the publisher and the worker: redeem a one-time
 * token from the broker's admin for a node id and secret, and save them
 * with the broker's address and pin in a credentials file (mode 0600) that
 * the node's other commands read. */
#ifndef AN_ENROLL_H
#define AN_ENROLL_H

#include "proto/archnet.pb-c.h"

/* argv[0] is "enroll"; `default_file` is where credentials go by default.
 * Returns a process exit status. */
int an_enroll_main(const char *program, Archnet__Role role, const char *default_file, int argc,
                   char **argv);

#endif
