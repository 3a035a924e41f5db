/* The publisher's subcommands, one file each. */
#ifndef AN_PUBLISHER_COMMANDS_H
#define AN_PUBLISHER_COMMANDS_H

int an_publisher_model_info(int argc, char **argv);
int an_publisher_train(int argc, char **argv);
int an_publisher_encode(int argc, char **argv);
int an_publisher_decode(int argc, char **argv);
int an_publisher_predict(int argc, char **argv);
int an_publisher_show(int argc, char **argv);
int an_publisher_submit(int argc, char **argv);
int an_publisher_status(int argc, char **argv);
int an_publisher_fetch(int argc, char **argv);
int an_publisher_cancel(int argc, char **argv);

/* "uploading", "queued", ... for a wire TaskState. */
const char *an_publisher_task_state_name(int state);
int an_publisher_baseline(int argc, char **argv);
int an_publisher_audit(int argc, char **argv);

#endif
