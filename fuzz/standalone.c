/*
 * standalone.c: a main() for the fuzz targets without libFuzzer, to replay
 * the seed corpus and the kept crashes with any C compiler (CI runs this:
 * fuzz/run.sh replay).  Arguments are files or directories of inputs.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static long replayed;

static void one(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long n;

    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(2);
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    replayed++;
}

static void walk(const char *path)
{
    struct stat st;
    struct dirent **names;
    int n, i;

    if (stat(path, &st) < 0) {
        perror(path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        one(path);
        return;
    }
    n = scandir(path, &names, NULL, alphasort);
    for (i = 0; i < n; i++) {
        char sub[4096];

        if (names[i]->d_name[0] != '.') {
            snprintf(sub, sizeof(sub), "%s/%s", path, names[i]->d_name);
            walk(sub);
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    int i;

    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++)
        walk(argv[i]);
    printf("%s: replayed %ld inputs, no crash\n", argv[0], replayed);
    return 0;
}
