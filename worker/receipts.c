/* Kept payment receipts; see receipts.h. */
#include "worker/receipts.h"

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cli.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/net/tls.h"
#include "common/receipt.h"

int an_worker_keep_receipt(an_client_t *c, an_arena_t *arena, uint64_t task, uint64_t worker,
                           const char *pin, const char *cache, char *path_out, size_t path_len,
                           char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__ReceiptQuery q = ARCHNET__RECEIPT_QUERY__INIT;
  an_receipt_doc_t doc;
  char dir[4200];
  int rc;
  q.task_id = task;
  req.body_case = ARCHNET__ENVELOPE__BODY_RECEIPT_QUERY;
  req.receipt_query = &q;
  an_arena_reset(arena);
  if ((rc = an_client_call(c, &req, arena, &reply, err, errlen)) != 0)
    return rc;
  if (reply->body_case != ARCHNET__ENVELOPE__BODY_RECEIPT) {
    snprintf(err, errlen, "the broker answered a receipt query with something else");
    return AN_EPROTO;
  }
  if (an_receipt_from_wire(reply->receipt, &doc) != 0) {
    snprintf(err, errlen, "the receipt's signature or key is too long");
    return AN_EFORMAT;
  }
  if (doc.task_id != task || doc.worker_id != worker) {
    snprintf(err, errlen, "the broker sent a receipt of task %llu to worker %llu for task %llu "
             "to worker %llu", (unsigned long long)doc.task_id,
             (unsigned long long)doc.worker_id, (unsigned long long)task,
             (unsigned long long)worker);
    return AN_EFORMAT;
  }
  if ((rc = an_receipt_verify(&doc, pin, err, errlen)) != 0)
    return rc;
  snprintf(dir, sizeof dir, "%s/receipts", cache);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
    return -errno;
  }
  snprintf(path_out, path_len, "%s/task-%llu.json", dir, (unsigned long long)task);
  return an_receipt_save(path_out, &doc, pin, err, errlen);
}

static int an_by_name(const struct dirent **a, const struct dirent **b) {
  return strverscmp((*a)->d_name, (*b)->d_name);
}

static int an_receipt_file(const struct dirent *e) {
  size_t n = strlen(e->d_name);
  return strncmp(e->d_name, "task-", 5) == 0 && n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

typedef struct receipts_settings {
  char *cache, *credentials;
} receipts_settings_t;

int an_worker_receipts(int argc, char **argv) {
  static const an_option_t opts[] = {
      {"cache", AN_OPT_STR, offsetof(receipts_settings_t, cache), "worker-cache", 0, 0, "DIR",
       "the daemon's --cache"},
      {"credentials", AN_OPT_STR, offsetof(receipts_settings_t, credentials),
       "worker.credentials", 0, 0, "FILE", "the broker's pin to check the signatures against"},
  };
  an_command_spec_t spec = {
      .program = "archnet-worker",
      .command = "receipts",
      .summary = "List the payment receipts this worker kept (CACHE/receipts/), each signature\n"
                 "checked again against the broker's pin. Anyone with the pin can check them\n"
                 "the same way (see docs/WORKER.md). Exits non-zero if one does not verify.",
      .options = opts,
      .n_options = 2};
  receipts_settings_t s = {0};
  an_credentials_t cred;
  struct dirent **names = NULL;
  char dir[4200], path[4500], err[600], pin[AN_TLS_PIN_LEN];
  int first, status, n = 0, bad = 0;
  int64_t total = 0;
  if ((status = an_cli_parse(&spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (an_credentials_read(s.credentials, &cred, err, sizeof err) != 0) {
    fprintf(stderr, "archnet-worker receipts: %s\n", err);
    goto done;
  }
  snprintf(dir, sizeof dir, "%s/receipts", s.cache);
  if ((n = scandir(dir, &names, an_receipt_file, an_by_name)) < 0) {
    if (errno == ENOENT) {
      printf("no receipts in %s yet\n", dir);
      status = AN_EXIT_OK;
    } else {
      fprintf(stderr, "archnet-worker receipts: %s: %s\n", dir, strerror(errno));
    }
    n = 0;
    goto done;
  }
  printf("%-8s %-10s %-8s %-6s %-20s %s\n", "task", "transfer", "credits", "fee", "paid (UTC)",
         "signature");
  for (int i = 0; i < n; i++) {
    an_receipt_doc_t doc;
    char when[32] = "?";
    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
    if (an_receipt_load(path, &doc, pin, err, sizeof err) != 0) {
      printf("%-8s %s\n", "?", err);
      bad++;
      continue;
    }
    int rc = an_receipt_verify(&doc, cred.pin, err, sizeof err);
    time_t t = (time_t)doc.time;
    struct tm tm;
    if (gmtime_r(&t, &tm))
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    printf("%-8llu %-10llu %-8lld %-6lld %-20s %s%s\n", (unsigned long long)doc.task_id,
           (unsigned long long)doc.transfer_id, (long long)doc.amount, (long long)doc.fee, when,
           rc == 0 ? "ok" : "BAD: ", rc == 0 ? "" : err);
    if (rc == 0)
      total += doc.amount;
    else
      bad++;
  }
  printf("%d receipt(s), %lld credits in those that verify%s\n", n, (long long)total,
         bad ? "; some do NOT verify" : "");
  status = bad ? AN_EXIT_FAIL : AN_EXIT_OK;
done:
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
  an_config_free(&spec, &s);
  return status;
}
