/*
 * harness drives a Fluent Bit Go output plugin (.so) exactly the way
 * Fluent Bit's Go proxy does (src/proxy/go/go.c and flb_plugin_proxy.c):
 * dlopen, FLBPluginRegister with a zeroed struct flb_plugin_proxy_def,
 * FLBPluginInit with a struct flbgo_output_plugin whose
 * api->output_get_property answers from a property file, FLBPluginFlushCtx
 * with the context the plugin stored (from any number of threads),
 * FLBPluginExitCtx, FLBPluginUnregister.
 *
 * It reads one command per line on stdin and answers one line on stdout:
 *
 *   register                           register rc=N type=N proxy=N flags=N name=S
 *   init NAME PROPS_FILE               init NAME rc=N
 *   flush NAME TAG CHUNK_FILE          flush NAME rc=N
 *   flushlegacy TAG CHUNK_FILE         flushlegacy rc=N
 *   parallel NAME THREADS TAG FILE...  parallel NAME rc=RC1,RC2,... (in FILE order)
 *   bench NAME TAG CHUNK_FILE N THREADS
 *                                      bench NAME ok=N retry=N error=N seconds=F
 *   exit NAME                          exit NAME rc=N
 *   exitrace NAME TAG FILE...          exitrace NAME exit=N ok=N retry=N error=N late=N
 *       a thread flushes FILE 1, then NAME exits while the thread keeps
 *       flushing the other FILEs (the last one repeatedly) until the exit
 *       has returned, then flushes the last FILE once more (late=its rc)
 *   exitlegacy                         exitlegacy rc=N
 *   unregister                         unregister
 *   quit
 *
 * A property file has one "name value" per line (the value is the rest of
 * the line). Errors are answered as "error MESSAGE".
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The layouts Fluent Bit uses (flb_plugin_proxy.h, flb_api.h, go.h). */
struct flb_plugin_proxy_def {
    int type;
    int proxy;
    int flags;
    char *name;
    char *description;
};

struct flb_api {
    const char *(*output_get_property)(const char *, void *);
    const char *(*input_get_property)(const char *, void *);
    void *reserved[8];
};

struct flb_plugin_proxy_context {
    void *remote_context;
    void *proxy;
};

struct flbgo_output_plugin {
    char *name;
    void *api;
    void *o_ins;
    struct flb_plugin_proxy_context *context;
    int (*cb_init)(struct flbgo_output_plugin *);
    int (*cb_flush)(const void *, size_t, const char *);
    int (*cb_flush_ctx)(void *, const void *, size_t, char *);
    int (*cb_exit)(void);
    int (*cb_exit_ctx)(void *);
};

#define MAX_PROPS 128
#define MAX_INSTANCES 16

/* instance plays flb_output_instance: what o_ins points to. */
struct instance {
    int used;
    char name[64];
    int nprops;
    char *keys[MAX_PROPS];
    char *vals[MAX_PROPS];
    struct flb_api api;
    struct flb_plugin_proxy_context ctx;
    struct flbgo_output_plugin plugin;
};

static struct instance instances[MAX_INSTANCES];
static struct flb_plugin_proxy_def def;
static int (*cb_register)(struct flb_plugin_proxy_def *);
static void (*cb_unregister)(struct flb_plugin_proxy_def *);
static int (*cb_init)(struct flbgo_output_plugin *);
static int (*cb_flush)(const void *, size_t, const char *);
static int (*cb_flush_ctx)(void *, const void *, size_t, char *);
static int (*cb_exit)(void);
static int (*cb_exit_ctx)(void *);

/* output_get_property: NULL when unset, like flb_output_get_property. */
static const char *get_property(const char *key, void *o_ins)
{
    struct instance *in = o_ins;
    for (int i = 0; i < in->nprops; i++) {
        if (strcasecmp(in->keys[i], key) == 0) {
            return in->vals[i];
        }
    }
    return NULL;
}

static struct instance *find(const char *name)
{
    for (int i = 0; i < MAX_INSTANCES; i++) {
        if (instances[i].used && strcmp(instances[i].name, name) == 0) {
            return &instances[i];
        }
    }
    return NULL;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? n : 1);
    if (n > 0 && fread(buf, 1, n, f) != (size_t) n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = (size_t) n;
    return buf;
}

static int load_props(struct instance *in, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    char line[8192];
    while (fgets(line, sizeof(line), f) && in->nprops < MAX_PROPS) {
        line[strcspn(line, "\r\n")] = 0;
        char *sp = strchr(line, ' ');
        if (!sp || sp == line) {
            continue;
        }
        *sp = 0;
        in->keys[in->nprops] = strdup(line);
        in->vals[in->nprops] = strdup(sp + 1);
        in->nprops++;
    }
    fclose(f);
    return 0;
}

struct job {
    struct instance *in;
    char *tag;
    int nfiles;
    char **data;
    size_t *lens;
    int *rcs;
    int next;          /* next file index, guarded by mu */
    long iterations;   /* bench: flushes left, guarded by mu */
    long ok, retry, error;
    pthread_mutex_t mu;
};

/* parallel_worker flushes files taken from a shared index, once each. */
static void *parallel_worker(void *arg)
{
    struct job *j = arg;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int i = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (i >= j->nfiles) {
            return NULL;
        }
        /* Fluent Bit hands every flush its own copy of the tag. */
        char *tag = strdup(j->tag);
        j->rcs[i] = cb_flush_ctx(j->in->ctx.remote_context, j->data[i], j->lens[i], tag);
        free(tag);
    }
}

/* bench_worker flushes the chunk until the shared count runs out, under a
 * tag numbered per flush: the plugin answers a chunk it has just committed
 * (same tag and bytes: Fluent Bit sending it again) without appending it. */
static void *bench_worker(void *arg)
{
    struct job *j = arg;
    long ok = 0, retry = 0, error = 0;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        long n = j->iterations--;
        pthread_mutex_unlock(&j->mu);
        if (n <= 0) {
            break;
        }
        size_t size = strlen(j->tag) + 24;
        char *tag = malloc(size);
        snprintf(tag, size, "%s.%ld", j->tag, n);
        int rc = cb_flush_ctx(j->in->ctx.remote_context, j->data[0], j->lens[0], tag);
        free(tag);
        if (rc == 1) {
            ok++;
        } else if (rc == 2) {
            retry++;
        } else {
            error++;
        }
    }
    pthread_mutex_lock(&j->mu);
    j->ok += ok;
    j->retry += retry;
    j->error += error;
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

struct race {
    struct instance *in;
    char *tag;
    int nfiles;
    char **data;
    size_t *lens;
    int started, exited;  /* guarded by mu */
    long ok, retry, error;
    int late;
    pthread_mutex_t mu;
    pthread_cond_t cond;
};

static int race_flush(struct race *r, int i)
{
    char *tag = strdup(r->tag);
    int rc = cb_flush_ctx(r->in->ctx.remote_context, r->data[i], r->lens[i], tag);
    free(tag);
    return rc;
}

/* race_worker flushes while the main thread exits the instance. */
static void *race_worker(void *arg)
{
    struct race *r = arg;
    for (int i = 0;; i++) {
        pthread_mutex_lock(&r->mu);
        int exited = r->exited;
        pthread_mutex_unlock(&r->mu);
        if (exited) {
            break;
        }
        int rc = race_flush(r, i < r->nfiles ? i : r->nfiles - 1);
        if (rc == 1) {
            r->ok++;
        } else if (rc == 2) {
            r->retry++;
        } else {
            r->error++;
        }
        if (i == 0) {
            pthread_mutex_lock(&r->mu);
            r->started = 1;
            pthread_cond_signal(&r->cond);
            pthread_mutex_unlock(&r->mu);
        }
        struct timespec pause = {0, 2000000};
        nanosleep(&pause, NULL);
    }
    r->late = race_flush(r, r->nfiles - 1);
    return NULL;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

#define MAX_ARGS 512

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    void *so = dlopen(argv[1], RTLD_LAZY);
    if (!so) {
        printf("error dlopen: %s\n", dlerror());
        return 1;
    }
    cb_register = (int (*)(struct flb_plugin_proxy_def *)) dlsym(so, "FLBPluginRegister");
    cb_unregister = (void (*)(struct flb_plugin_proxy_def *)) dlsym(so, "FLBPluginUnregister");
    cb_init = (int (*)(struct flbgo_output_plugin *)) dlsym(so, "FLBPluginInit");
    cb_flush = (int (*)(const void *, size_t, const char *)) dlsym(so, "FLBPluginFlush");
    cb_flush_ctx = (int (*)(void *, const void *, size_t, char *)) dlsym(so, "FLBPluginFlushCtx");
    cb_exit = (int (*)(void)) dlsym(so, "FLBPluginExit");
    cb_exit_ctx = (int (*)(void *)) dlsym(so, "FLBPluginExitCtx");
    if (!cb_register || !cb_init || !cb_flush_ctx || !cb_exit_ctx) {
        printf("error missing symbols: register=%p init=%p flushctx=%p exitctx=%p\n",
               (void *) cb_register, (void *) cb_init, (void *) cb_flush_ctx, (void *) cb_exit_ctx);
        return 1;
    }
    printf("ready\n");

    static char line[1 << 16];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        char *args[MAX_ARGS];
        int n = 0;
        for (char *tok = strtok(line, " "); tok && n < MAX_ARGS; tok = strtok(NULL, " ")) {
            args[n++] = tok;
        }
        if (n == 0) {
            continue;
        }
        const char *cmd = args[0];
        if (strcmp(cmd, "quit") == 0) {
            break;
        }
        else if (strcmp(cmd, "register") == 0) {
            memset(&def, 0, sizeof(def));
            int rc = cb_register(&def);
            printf("register rc=%d type=%d proxy=%d flags=%d name=%s\n",
                   rc, def.type, def.proxy, def.flags, def.name ? def.name : "(null)");
        }
        else if (strcmp(cmd, "unregister") == 0) {
            if (cb_unregister) {
                cb_unregister(&def);
            }
            printf("unregister\n");
        }
        else if (strcmp(cmd, "init") == 0 && n == 3) {
            struct instance *in = NULL;
            for (int i = 0; i < MAX_INSTANCES; i++) {
                if (!instances[i].used) {
                    in = &instances[i];
                    break;
                }
            }
            if (!in || find(args[1])) {
                printf("error no free slot or duplicate name %s\n", args[1]);
                continue;
            }
            memset(in, 0, sizeof(*in));
            snprintf(in->name, sizeof(in->name), "%s", args[1]);
            if (load_props(in, args[2]) != 0) {
                printf("error cannot read %s\n", args[2]);
                continue;
            }
            in->api.output_get_property = get_property;
            in->plugin.name = "metership";
            in->plugin.api = &in->api;
            in->plugin.o_ins = in;
            in->plugin.context = &in->ctx;
            in->plugin.cb_init = cb_init;
            in->plugin.cb_flush = cb_flush;
            in->plugin.cb_flush_ctx = cb_flush_ctx;
            in->plugin.cb_exit = cb_exit;
            in->plugin.cb_exit_ctx = cb_exit_ctx;
            int rc = cb_init(&in->plugin);
            /* go.c: ret <= 0 is a failed initialisation. */
            in->used = rc > 0;
            printf("init %s rc=%d\n", args[1], rc);
        }
        else if (strcmp(cmd, "flush") == 0 && n == 4) {
            struct instance *in = find(args[1]);
            size_t len;
            char *data = read_file(args[3], &len);
            if (!in || !data) {
                printf("error unknown instance %s or unreadable %s\n", args[1], args[3]);
                free(data);
                continue;
            }
            char *tag = strdup(args[2]);
            int rc = cb_flush_ctx(in->ctx.remote_context, data, len, tag);
            free(tag);
            free(data);
            printf("flush %s rc=%d\n", args[1], rc);
        }
        else if (strcmp(cmd, "flushlegacy") == 0 && n == 3) {
            size_t len;
            char *data = read_file(args[2], &len);
            if (!data || !cb_flush) {
                printf("error unreadable %s or no FLBPluginFlush\n", args[2]);
                free(data);
                continue;
            }
            int rc = cb_flush(data, len, args[1]);
            free(data);
            printf("flushlegacy rc=%d\n", rc);
        }
        else if ((strcmp(cmd, "parallel") == 0 && n >= 5) || (strcmp(cmd, "bench") == 0 && n == 6)) {
            int bench = cmd[0] == 'b';
            struct instance *in = find(args[1]);
            if (!in) {
                printf("error unknown instance %s\n", args[1]);
                continue;
            }
            struct job j;
            memset(&j, 0, sizeof(j));
            pthread_mutex_init(&j.mu, NULL);
            j.in = in;
            int threads;
            if (bench) {
                j.tag = args[2];
                j.nfiles = 1;
                j.iterations = atol(args[4]);
                threads = atoi(args[5]);
            }
            else {
                threads = atoi(args[2]);
                j.tag = args[3];
                j.nfiles = n - 4;
            }
            j.data = calloc(j.nfiles, sizeof(char *));
            j.lens = calloc(j.nfiles, sizeof(size_t));
            j.rcs = calloc(j.nfiles, sizeof(int));
            int ok = 1;
            for (int i = 0; i < j.nfiles; i++) {
                j.data[i] = read_file(bench ? args[3] : args[4 + i], &j.lens[i]);
                ok = ok && j.data[i];
            }
            if (!ok || threads < 1) {
                printf("error unreadable chunk or bad thread count\n");
            }
            else {
                pthread_t *tids = calloc(threads, sizeof(pthread_t));
                double start = now_seconds();
                for (int t = 0; t < threads; t++) {
                    pthread_create(&tids[t], NULL, bench ? bench_worker : parallel_worker, &j);
                }
                for (int t = 0; t < threads; t++) {
                    pthread_join(tids[t], NULL);
                }
                double took = now_seconds() - start;
                free(tids);
                if (bench) {
                    printf("bench %s ok=%ld retry=%ld error=%ld seconds=%.6f\n", args[1], j.ok, j.retry, j.error, took);
                }
                else {
                    printf("parallel %s rc=", args[1]);
                    for (int i = 0; i < j.nfiles; i++) {
                        printf(i ? ",%d" : "%d", j.rcs[i]);
                    }
                    printf("\n");
                }
            }
            for (int i = 0; i < j.nfiles; i++) {
                free(j.data[i]);
            }
            free(j.data);
            free(j.lens);
            free(j.rcs);
            pthread_mutex_destroy(&j.mu);
        }
        else if (strcmp(cmd, "exit") == 0 && n == 2) {
            struct instance *in = find(args[1]);
            if (!in) {
                printf("error unknown instance %s\n", args[1]);
                continue;
            }
            int rc = cb_exit_ctx(in->ctx.remote_context);
            in->used = 0;
            printf("exit %s rc=%d\n", args[1], rc);
        }
        else if (strcmp(cmd, "exitrace") == 0 && n >= 4) {
            struct instance *in = find(args[1]);
            if (!in) {
                printf("error unknown instance %s\n", args[1]);
                continue;
            }
            struct race r;
            memset(&r, 0, sizeof(r));
            pthread_mutex_init(&r.mu, NULL);
            pthread_cond_init(&r.cond, NULL);
            r.in = in;
            r.tag = args[2];
            r.nfiles = n - 3;
            r.data = calloc(r.nfiles, sizeof(char *));
            r.lens = calloc(r.nfiles, sizeof(size_t));
            int ok = 1;
            for (int i = 0; i < r.nfiles; i++) {
                r.data[i] = read_file(args[3 + i], &r.lens[i]);
                ok = ok && r.data[i];
            }
            if (!ok) {
                printf("error unreadable chunk\n");
            }
            else {
                pthread_t tid;
                pthread_create(&tid, NULL, race_worker, &r);
                pthread_mutex_lock(&r.mu);
                while (!r.started) {
                    pthread_cond_wait(&r.cond, &r.mu);
                }
                pthread_mutex_unlock(&r.mu);
                int rc = cb_exit_ctx(in->ctx.remote_context);
                pthread_mutex_lock(&r.mu);
                r.exited = 1;
                pthread_mutex_unlock(&r.mu);
                pthread_join(tid, NULL);
                in->used = 0;
                printf("exitrace %s exit=%d ok=%ld retry=%ld error=%ld late=%d\n", args[1], rc, r.ok, r.retry, r.error, r.late);
            }
            for (int i = 0; i < r.nfiles; i++) {
                free(r.data[i]);
            }
            free(r.data);
            free(r.lens);
            pthread_cond_destroy(&r.cond);
            pthread_mutex_destroy(&r.mu);
        }
        else if (strcmp(cmd, "exitlegacy") == 0) {
            int rc = cb_exit ? cb_exit() : -1;
            printf("exitlegacy rc=%d\n", rc);
        }
        else {
            printf("error unknown command %s (%d args)\n", cmd, n);
        }
    }
    return 0;
}
