/* The broker operator's subcommands (archnet-broker enroll, topup, nodes,
 * tasks, ledger, revoke, kick). Each takes its argv ("enroll", ...) and
 * returns a process exit status. */
#ifndef AN_SERVER_ADMIN_H
#define AN_SERVER_ADMIN_H

int an_admin_enroll(int argc, char **argv);
int an_admin_topup(int argc, char **argv);
int an_admin_nodes(int argc, char **argv);
int an_admin_tasks(int argc, char **argv);
int an_admin_ledger(int argc, char **argv);
int an_admin_revoke(int argc, char **argv);
int an_admin_kick(int argc, char **argv);

#endif
