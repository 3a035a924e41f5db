/* The `ping` command every client program has: connect to a broker with
 * its pin, say Hello, and time a few Ping round trips. The quickest way for
 * a publisher or a volunteer to check address, pin and firewall. */
#ifndef AN_PROBE_H
#define AN_PROBE_H

#include "proto/archnet.pb-c.h"

/* argv[0] is "ping". Returns a process exit status (see common/cli.h). */
int an_probe_main(const char *program, Archnet__Role role, int argc, char **argv);

#endif
