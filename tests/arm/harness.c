/* A minimal C host for a dsc model: the test harness of the ARM64 code, and an
 * example of embedding a compiled model in a C or C++ program without Python.
 *
 * Build (the object is the artifact's member cpu/<arch>.o, linked directly):
 *     aarch64-linux-gnu-gcc -O2 -static harness.c model.o -lm -o run
 * Run:
 *     qemu-aarch64 ./run io.txt          (or ./run io.txt on an ARM64 machine)
 *
 * io.txt, written by tests/arm/armrun.py from the artifact's manifest, one
 * directive per line, inputs and outputs in manifest order (paths without
 * spaces, relative to the working directory):
 *     weights <path>              weights.bin (loaded at 64-byte alignment)
 *     arena <bytes>               manifest "arena_bytes"
 *     input <path> <bytes>        a contiguous row-major array, raw bytes
 *     output <path> <bytes>       where to write the output, raw bytes
 *     repeat <n>                  optional: call the model n times (default 1)
 *
 * The entry point every dsc artifact's object code exports:
 *     void dsc_run_single(void **inputs, void **outputs, void *weights, void *arena);
 * It runs the whole model on the calling thread. Calls with distinct arenas
 * and output buffers may run concurrently; weights and inputs are read only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void dsc_run_single(void **inputs, void **outputs, void *weights, void *arena);

#define MAX_IO 256
#define ALIGN 64

static void die(const char *what, const char *path) {
    fprintf(stderr, "harness: %s%s%s\n", what, path ? ": " : "", path ? path : "");
    exit(2);
}

static void *alloc_aligned(size_t bytes) {
    size_t n = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    void *p = aligned_alloc(ALIGN, n ? n : ALIGN);
    if (!p) die("out of memory", NULL);
    return p;
}

/* Reads a whole file into a fresh 64-byte aligned buffer; `want` (if not -1) must match its size. */
static void *read_file(const char *path, long want, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (want >= 0 && n != want) {
        fprintf(stderr, "harness: %s has %ld bytes, the model takes %ld\n", path, n, want);
        exit(2);
    }
    void *p = alloc_aligned((size_t)n);
    if (n && fread(p, 1, (size_t)n, f) != (size_t)n) die("cannot read", path);
    fclose(f);
    if (size) *size = (size_t)n;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s io.txt\n", argv[0]);
        return 2;
    }
    FILE *spec = fopen(argv[1], "r");
    if (!spec) die("cannot open", argv[1]);

    void *inputs[MAX_IO], *outputs[MAX_IO];
    char out_paths[MAX_IO][4096];
    size_t out_bytes[MAX_IO];
    int n_in = 0, n_out = 0;
    long repeat = 1;
    void *weights = NULL;
    size_t arena_bytes = 0;

    char key[32], path[4096];
    while (fscanf(spec, "%31s", key) == 1) {
        if (!strcmp(key, "weights")) {
            if (fscanf(spec, "%4095s", path) != 1) die("bad weights line", argv[1]);
            weights = read_file(path, -1, NULL);
        } else if (!strcmp(key, "arena")) {
            if (fscanf(spec, "%zu", &arena_bytes) != 1) die("bad arena line", argv[1]);
        } else if (!strcmp(key, "repeat")) {
            if (fscanf(spec, "%ld", &repeat) != 1) die("bad repeat line", argv[1]);
        } else if (!strcmp(key, "input") || !strcmp(key, "output")) {
            long bytes;
            if (fscanf(spec, "%4095s %ld", path, &bytes) != 2) die("bad input/output line", argv[1]);
            if (n_in >= MAX_IO || n_out >= MAX_IO) die("too many inputs or outputs", NULL);
            if (key[0] == 'i') {
                inputs[n_in++] = read_file(path, bytes, NULL);
            } else {
                strcpy(out_paths[n_out], path);
                out_bytes[n_out] = (size_t)bytes;
                outputs[n_out] = alloc_aligned((size_t)bytes);
                /* poison: a kernel that reads an output before writing it gives NaNs, not luck */
                memset(outputs[n_out], 0xff, (size_t)bytes);
                n_out++;
            }
        } else {
            die("unknown directive in io file", key);
        }
    }
    fclose(spec);
    if (!weights) weights = alloc_aligned(ALIGN);

    /* The arena holds every intermediate tensor; poisoned like the outputs. */
    void *arena = alloc_aligned(arena_bytes);
    memset(arena, 0xff, arena_bytes ? arena_bytes : ALIGN);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long r = 0; r < repeat; r++) dsc_run_single(inputs, outputs, weights, arena);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    for (int j = 0; j < n_out; j++) {
        FILE *f = fopen(out_paths[j], "wb");
        if (!f) die("cannot write", out_paths[j]);
        if (out_bytes[j] && fwrite(outputs[j], 1, out_bytes[j], f) != out_bytes[j]) die("cannot write", out_paths[j]);
        fclose(f);
    }
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("ran %ld time(s): %.3f ms per run, %d input(s), %d output(s)\n", repeat, ms / (double)repeat, n_in, n_out);
    return 0;
}
