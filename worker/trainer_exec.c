/* The external trainer: the volunteer's own command (PyTorch, anything),
 * run in its own process group so that a cancelled task stops all of it.
 * The worker keeps the lease alive while it runs. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "common/error.h"
#include "worker/trainer.h"

static double an_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Stops the command's whole process group: TERM, then KILL after 5 s. */
static void an_stop_group(pid_t pid) {
  kill(-pid, SIGTERM);
  for (int i = 0; i < 50; i++) {
    if (waitpid(pid, NULL, WNOHANG) == pid)
      return;
    usleep(100 * 1000);
  }
  kill(-pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

int an_trainer_exec(const an_train_job_t *job, char *err, size_t errlen) {
  char classes[32], shape[96];
  struct stat st;
  int status = 0;
  snprintf(classes, sizeof classes, "%lld", (long long)job->classes);
  snprintf(shape, sizeof shape, "%lldx%lldx%lld", (long long)job->c, (long long)job->h,
           (long long)job->w);
  unlink(job->out_path);
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(err, errlen, "cannot start the trainer: %s", strerror(errno));
    return -errno;
  }
  if (pid == 0) {
    /* Its own group, so that stopping it stops whatever it started. */
    setpgid(0, 0);
    setenv("ARCHNET_X", job->x_path, 1);
    setenv("ARCHNET_Y", job->y_path, 1);
    setenv("ARCHNET_OUT", job->out_path, 1);
    setenv("ARCHNET_CLASSES", classes, 1);
    setenv("ARCHNET_INPUT_SHAPE", shape, 1);
    execl("/bin/sh", "sh", "-c", job->command, "archnet-trainer", job->x_path, job->y_path,
          job->out_path, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid); /* also from here: no race with the child's own call */
  double last = an_mono();
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid)
      break;
    if (w < 0 && errno != EINTR) {
      snprintf(err, errlen, "waiting for the trainer: %s", strerror(errno));
      return -errno;
    }
    if (an_mono() - last >= 2.0) {
      last = an_mono();
      if (job->progress && job->progress(0.5, job->arg)) {
        an_stop_group(pid);
        return 1;
      }
    }
    usleep(200 * 1000);
  }
  if (WIFSIGNALED(status)) {
    snprintf(err, errlen, "the trainer command was killed by signal %d", WTERMSIG(status));
    return AN_EMODEL;
  }
  if (WEXITSTATUS(status) != 0) {
    snprintf(err, errlen, "the trainer command exited with status %d%s", WEXITSTATUS(status),
             WEXITSTATUS(status) == 127 ? " (command not found?)" : "");
    return AN_EMODEL;
  }
  if (stat(job->out_path, &st) != 0 || st.st_size == 0) {
    snprintf(err, errlen, "the trainer command finished without writing %s", job->out_path);
    return AN_EMODEL;
  }
  return 0;
}
