/*
 * park.c: the heap of park.h.  Index 0 is the top; the children of i are
 * 2i+1 and 2i+2; every entry knows its index, so that one taken out early
 * costs O(log n) like the rest.
 */
#include "park.h"

#include <stdlib.h>

static bool before(const struct park_entry *a, const struct park_entry *b)
{
    return a->due_us < b->due_us || (a->due_us == b->due_us && a->seq < b->seq);
}

static void put(struct park_heap *h, size_t i, struct park_entry *e)
{
    h->e[i] = e;
    e->index = i;
}

static void sift_up(struct park_heap *h, size_t i)
{
    struct park_entry *e = h->e[i];

    while (i > 0 && before(e, h->e[(i - 1) / 2])) {
        put(h, i, h->e[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    put(h, i, e);
}

static void sift_down(struct park_heap *h, size_t i)
{
    struct park_entry *e = h->e[i];
    size_t c;

    while ((c = 2 * i + 1) < h->n) {
        if (c + 1 < h->n && before(h->e[c + 1], h->e[c]))
            c++;
        if (!before(h->e[c], e))
            break;
        put(h, i, h->e[c]);
        i = c;
    }
    put(h, i, e);
}

void park_push(struct park_heap *h, struct park_entry *e)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct park_entry **grown = realloc(h->e, cap * sizeof(*grown));

        if (!grown)
            abort(); /* out of memory */
        h->e = grown;
        h->cap = cap;
    }
    e->seq = h->seq++;
    put(h, h->n++, e);
    sift_up(h, e->index);
}

struct park_entry *park_peek(const struct park_heap *h)
{
    return h->n ? h->e[0] : NULL;
}

void park_remove(struct park_heap *h, struct park_entry *e)
{
    size_t i = e->index;
    struct park_entry *last = h->e[--h->n];

    if (last == e)
        return;
    put(h, i, last);
    if (i > 0 && before(last, h->e[(i - 1) / 2]))
        sift_up(h, i);
    else
        sift_down(h, i);
}

struct park_entry *park_pop_due(struct park_heap *h, int64_t now_us)
{
    struct park_entry *top = park_peek(h);

    if (!top || top->due_us > now_us)
        return NULL;
    park_remove(h, top);
    return top;
}

void park_heap_release(struct park_heap *h)
{
    free(h->e);
    h->e = NULL;
    h->n = h->cap = 0;
}
