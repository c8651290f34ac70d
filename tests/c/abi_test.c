/* Exercises libclipshape's C ABI the way a host does, on the tiny golden generator.
 * Built and run by tests/c_abi.rs with LD_LIBRARY_PATH unset: the library must find libtorch
 * through its own rpath.
 *
 * usage: abi_test GENERATOR.pt LATENT.f32 SHIFT.f32 EXPECTED.rgba TMPDIR [E4E.pt CLIP.pt VOCAB.gz]
 *   LATENT.f32    W+ of the golden image (10×64 float32)
 *   SHIFT.f32     the golden edit direction for convs.3 (1×32×32×3×3 float32)
 *   EXPECTED.rgba golden renders at strengths -3, -1.5, 0, 1.5, 3 (5×64×64×4 bytes)
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clipshape.h"

static int failures = 0, checks = 0;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        checks++;                                                           \
        if (!(cond)) {                                                      \
            failures++;                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, " (last error: %s)\n", cs_last_error());        \
        }                                                                   \
    } while (0)

static void on_log(void *user, int32_t level, const char *message) {
    int *count = user;
    if (level >= 1 && level <= 5 && message && strlen(message) > 0) (*count)++;
}

static void *cancel_thread(void *ctx) {
    cs_cancel((const cs_ctx *)ctx);
    return NULL;
}

struct progress_log {
    const cs_ctx *ctx;
    int calls, last_step, cancel_at;
    float first_loss, last_loss;
};

/* Records progress; at `cancel_at` it cancels from ANOTHER thread, as a host's Cancel button. */
static int32_t on_progress(void *user, int32_t step, int32_t total, float loss, float clip_sim) {
    struct progress_log *log = user;
    (void)total;
    (void)clip_sim;
    if (log->calls++ == 0) log->first_loss = loss;
    log->last_step = step;
    log->last_loss = loss;
    if (step == log->cancel_at) {
        pthread_t t;
        pthread_create(&t, NULL, cancel_thread, (void *)log->ctx);
        pthread_join(t, NULL);
    }
    return 0;
}

/* The picture while it learns: checks each one the library hands over and counts them. */
struct preview_log {
    int calls, last_step, bad;
};

static int32_t on_preview(void *user, int32_t step, const cs_image *picture) {
    struct preview_log *log = user;
    log->calls++;
    log->last_step = step;
    if (!picture || picture->format != CS_PIXEL_FORMAT_RGBA8 || picture->stride != picture->width * 4 || picture->width == 0)
        log->bad++;
    else
        for (uint32_t i = 3; i < picture->stride * picture->height; i += 4)
            if (picture->data[i] != 255) log->bad++;
    return 0;
}

/* The whole edit through the ABI: encode a picture, optimise a shift, score, render at a box. */
static void edit_checks(const char *e4e, const char *clip, const char *vocab, const char *tmp) {
    cs_context_params p;
    cs_context_params_init(&p);
    p.generator_path = e4e;
    p.clip_path = clip;
    p.vocab_path = vocab;
    p.device = CS_DEVICE_KIND_CPU;
    cs_ctx *ctx = NULL;
    if (cs_context_create(&p, &ctx) != CS_STATUS_OK) {
        fprintf(stderr, "edit context: %s\n", cs_last_error());
        failures++;
        return;
    }
    /* A 100×80 RGBA picture with padded rows (stride 420), as a host's selection. */
    uint32_t w = 100, h = 80, stride = 420;
    unsigned char *px = calloc((size_t)stride * h, 1);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            unsigned char *q = px + y * stride + 4 * x;
            q[0] = (unsigned char)(x * 2); q[1] = (unsigned char)(y * 3); q[2] = (unsigned char)((x * y) & 255); q[3] = 255;
        }
    cs_image img = {px, w, h, stride, CS_PIXEL_FORMAT_RGBA8};
    cs_latent *latent = NULL;
    cs_images *recon = NULL;
    CHECK(cs_encode(ctx, &img, &latent, &recon) == CS_STATUS_OK, "encode");
    CHECK(cs_images_count(recon) == 1, "one reconstruction");
    cs_image v;
    CHECK(cs_images_get(recon, 0, &v) == CS_STATUS_OK && v.width == w && v.height == h, "recon at the box size %ux%u", v.width, v.height);
    cs_image bad = img;
    bad.stride = 10;
    cs_latent *none = NULL;
    CHECK(cs_encode(ctx, &bad, &none, NULL) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "stride"), "stride checked");
    bad = img;
    bad.width = 1;
    bad.height = 1;
    CHECK(cs_encode(ctx, &bad, &none, NULL) == CS_STATUS_INVALID_ARGUMENT, "1x1 refused");
    bad = img;
    bad.format = 5;
    CHECK(cs_encode(ctx, &bad, &none, NULL) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "format"), "format checked");

    float score = -2;
    CHECK(cs_clip_score(ctx, &img, "a colourful pattern", &score) == CS_STATUS_OK && score > -1 && score < 1, "score %f", score);
    CHECK(cs_clip_score(ctx, &img, "", &score) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "prompt"), "empty text");
    const char bad_utf8[] = {'a', (char)0xff, 'b', 0};
    CHECK(cs_clip_score(ctx, &img, bad_utf8, &score) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "UTF-8"), "invalid UTF-8");

    struct progress_log log = {ctx, 0, 0, -1, 0, 0};
    cs_optimize_params op;
    cs_optimize_params_init(&op);
    op.prompt = "face with big nose";
    op.steps = 15;
    op.progress = on_progress;
    op.progress_user = &log;
    cs_shift *shift = NULL;
    CHECK(cs_optimize(ctx, latent, &op, &shift) == CS_STATUS_OK, "optimize");
    CHECK(log.calls == 15 && log.last_step == 15 && log.last_loss < log.first_loss, "progress %d calls, loss %f -> %f", log.calls, log.first_loss, log.last_loss);
    CHECK(shift && strcmp(cs_shift_layer(shift), "convs.3") == 0, "default layer");
    const char *prompt = cs_shift_get_meta(shift, "prompt");
    CHECK(prompt && strcmp(prompt, "face with big nose") == 0, "prompt recorded");
    CHECK(cs_shift_get_meta(shift, "clip_sim_after") != NULL && cs_shift_get_meta(shift, "no such key") == NULL, "meta");

    /* Pictures while it learns: step 1, then every preview_every steps (progress_user is theirs too). */
    struct preview_log plog = {0, 0, 0};
    cs_optimize_params pp;
    cs_optimize_params_init(&pp);
    pp.prompt = "face with big nose";
    pp.steps = 7;
    pp.preview = on_preview;
    pp.preview_every = 3;
    pp.progress_user = &plog;
    cs_shift *previewed = NULL;
    CHECK(cs_optimize(ctx, latent, &pp, &previewed) == CS_STATUS_OK, "optimize with previews");
    CHECK(plog.calls == 3 && plog.last_step == 6 && plog.bad == 0, "previews: %d calls, last step %d, %d bad", plog.calls, plog.last_step, plog.bad);
    cs_shift_free(previewed);
    pp.preview_every = -1;
    CHECK(cs_optimize(ctx, latent, &pp, &previewed) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "preview_every"), "negative preview_every");

    /* Cancel from another thread stops within a step and returns no shift. */
    struct progress_log log2 = {ctx, 0, 0, 3, 0, 0};
    op.steps = 100000;
    op.progress_user = &log2;
    cs_shift *cancelled = (cs_shift *)0x1;
    CHECK(cs_optimize(ctx, latent, &op, &cancelled) == CS_STATUS_CANCELLED && cancelled == NULL, "cancelled");
    CHECK(log2.last_step <= 4, "stopped at step %d", log2.last_step);
    op.steps = 0;
    CHECK(cs_optimize(ctx, latent, &op, &cancelled) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "steps"), "steps 0");
    op.steps = 5;
    op.layer = "convs.77";
    CHECK(cs_optimize(ctx, latent, &op, &cancelled) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "convs.77"), "layer");
    op.layer = NULL;
    op.lambda2 = NAN;
    CHECK(cs_optimize(ctx, latent, &op, &cancelled) == CS_STATUS_INVALID_ARGUMENT && strstr(cs_last_error(), "lambda2"), "NaN lambda2");

    /* Render into the host's box: target size, BGRA for Krita. */
    float ks[3] = {-2, 0, 2};
    cs_shift_ref ref = {shift, 1.0f};
    cs_render_params r;
    cs_render_params_init(&r);
    r.shifts = &ref;
    r.n_shifts = 1;
    r.strengths = ks;
    r.n_strengths = 3;
    r.format = CS_PIXEL_FORMAT_BGRA8;
    r.target_width = w;
    r.target_height = h;
    cs_images *out = NULL;
    CHECK(cs_render(ctx, latent, &r, &out) == CS_STATUS_OK && cs_images_count(out) == 3, "render to box");
    cs_image o;
    cs_images_get(out, 1, &o);
    CHECK(o.width == w && o.height == h && o.stride == 4 * w, "box size");

    char path[4096];
    snprintf(path, sizeof path, "%s/learnt.safetensors", tmp);
    CHECK(cs_shift_save(shift, path) == CS_STATUS_OK, "save learnt shift");
    cs_shift *again = NULL;
    CHECK(cs_shift_load(ctx, path, &again) == CS_STATUS_OK, "load learnt shift");
    const char *p2 = cs_shift_get_meta(again, "prompt");
    CHECK(p2 && strcmp(p2, "face with big nose") == 0, "metadata survives the file");

    cs_shift_free(again);
    cs_images_free(out);
    cs_shift_free(shift);
    cs_images_free(recon);
    cs_latent_free(latent);
    cs_context_free(ctx);
    free(px);
}

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(*len);
    if (fread(buf, 1, *len, f) != *len) { perror(path); exit(2); }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 9) {
        fprintf(stderr, "usage: %s GENERATOR LATENT.f32 SHIFT.f32 EXPECTED.rgba TMPDIR [E4E CLIP VOCAB]\n", argv[0]);
        return 2;
    }
    size_t latent_bytes, shift_bytes, expected_bytes;
    float *latent_data = read_file(argv[2], &latent_bytes);
    float *shift_data = read_file(argv[3], &shift_bytes);
    unsigned char *expected = read_file(argv[4], &expected_bytes);
    char path[4096];

    CHECK(cs_abi_version() == CS_ABI_VERSION, "abi %u", cs_abi_version());
    CHECK(strlen(cs_version()) > 0, "empty version");

    /* Bad input: a clear status and a message naming what was wrong. */
    cs_ctx *ctx = (cs_ctx *)0x1;
    CHECK(cs_context_create(NULL, &ctx) == CS_STATUS_INVALID_ARGUMENT, "NULL params");
    CHECK(ctx == NULL, "out not cleared on failure");
    CHECK(strstr(cs_last_error(), "params") != NULL, "message: %s", cs_last_error());

    cs_context_params p;
    CHECK(cs_context_params_init(&p) == CS_STATUS_OK, "params init");
    p.generator_path = "/nonexistent/generator.pt";
    p.device = CS_DEVICE_KIND_CPU;
    CHECK(cs_context_create(&p, &ctx) == CS_STATUS_IO, "missing file");
    CHECK(strstr(cs_last_error(), "/nonexistent/generator.pt") != NULL, "message names the file");

    p.generator_path = argv[1];
    p.device = 7;
    CHECK(cs_context_create(&p, &ctx) == CS_STATUS_INVALID_ARGUMENT, "bad device kind");
    p.device = CS_DEVICE_KIND_CUDA;
    p.device_index = 63;
    CHECK(cs_context_create(&p, &ctx) == CS_STATUS_DEVICE, "absent GPU");
    CHECK(strstr(cs_last_error(), "cuda:63") != NULL, "message names the device");

    cs_context_params small;
    cs_context_params_init(&small);
    small.struct_size = 4;
    small.generator_path = argv[1];
    CHECK(cs_context_create(&small, &ctx) == CS_STATUS_INVALID_ARGUMENT, "struct_size checked");

    /* The real thing, with the library's log routed to the host. */
    int log_lines = 0;
    CHECK(cs_set_log(9, on_log, &log_lines) == CS_STATUS_INVALID_ARGUMENT, "log level range");
    CHECK(cs_set_log(3, on_log, &log_lines) == CS_STATUS_OK, "log callback");
    p.device = CS_DEVICE_KIND_CPU;
    p.device_index = 0;
    p.n_threads = 1;
    if (cs_context_create(&p, &ctx) != CS_STATUS_OK) {
        fprintf(stderr, "cannot create context: %s\n", cs_last_error());
        return 1;
    }
    CHECK(log_lines > 0, "info lines reach the callback");
    CHECK(cs_set_log(0, NULL, NULL) == CS_STATUS_OK, "logging off");
    CHECK(strcmp(cs_last_error(), "") == 0, "last error cleared on success");

    cs_generator_info info = {.struct_size = sizeof info};
    CHECK(cs_generator_get_info(ctx, &info) == CS_STATUS_OK, "info");
    CHECK(info.resolution == 64 && info.n_latent == 10 && info.style_dim == 64, "info %u %u %u",
          info.resolution, info.n_latent, info.style_dim);
    CHECK(info.n_layers == 14, "n_layers %u", info.n_layers);
    int found = 0;
    for (uint32_t i = 0; i < info.n_layers; i++) {
        cs_layer_info l;
        CHECK(cs_generator_get_layer(ctx, i, &l) == CS_STATUS_OK, "layer %u", i);
        if (strcmp(l.name, "convs.3") == 0) {
            found = 1;
            CHECK(l.resolution == 16 && l.wplus_index == 4 && l.weight_numel == 32 * 32 * 9, "convs.3 facts");
            CHECK(l.weight_numel * sizeof(float) == shift_bytes, "shift file size");
        }
    }
    CHECK(found, "convs.3 listed");
    cs_layer_info none;
    CHECK(cs_generator_get_layer(ctx, info.n_layers, &none) == CS_STATUS_INVALID_ARGUMENT, "layer index range");

    /* Latents in and out. */
    size_t n_latent = latent_bytes / sizeof(float);
    cs_latent *latent = NULL;
    CHECK(cs_latent_from_floats(ctx, latent_data, n_latent - 1, &latent) == CS_STATUS_INVALID_ARGUMENT, "short latent");
    CHECK(strstr(cs_last_error(), "639") != NULL, "message gives the count: %s", cs_last_error());
    CHECK(cs_latent_from_floats(ctx, latent_data, n_latent, &latent) == CS_STATUS_OK, "latent");
    CHECK(cs_latent_len(latent) == n_latent, "latent len");
    float *back = malloc(latent_bytes);
    CHECK(cs_latent_to_floats(latent, back, n_latent) == CS_STATUS_OK, "latent export");
    CHECK(memcmp(back, latent_data, latent_bytes) == 0, "latent round trip");
    CHECK(cs_latent_to_floats(latent, back, n_latent + 1) == CS_STATUS_INVALID_ARGUMENT, "export size checked");
    float saved = latent_data[5];
    latent_data[5] = NAN;
    cs_latent *bad = NULL;
    CHECK(cs_latent_from_floats(ctx, latent_data, n_latent, &bad) == CS_STATUS_INVALID_ARGUMENT && bad == NULL, "NaN latent");
    latent_data[5] = saved;

    /* Shifts in and out. */
    size_t n_shift = shift_bytes / sizeof(float);
    cs_shift *shift = NULL;
    CHECK(cs_shift_from_floats(ctx, "convs.99", shift_data, n_shift, &shift) == CS_STATUS_INVALID_ARGUMENT, "bad layer");
    CHECK(strstr(cs_last_error(), "convs.99") != NULL, "message names the layer");
    CHECK(cs_shift_from_floats(ctx, "convs.2", shift_data, n_shift - 9, &shift) == CS_STATUS_INVALID_ARGUMENT, "shift size");
    CHECK(cs_shift_from_floats(ctx, "convs.3", shift_data, n_shift, &shift) == CS_STATUS_OK, "shift");
    CHECK(strcmp(cs_shift_layer(shift), "convs.3") == 0, "shift layer %s", cs_shift_layer(shift));
    CHECK(cs_shift_len(shift) == n_shift, "shift len");

    /* Render at the golden strengths; compare with the golden pixels. */
    float strengths[5] = {-3.0f, -1.5f, 0.0f, 1.5f, 3.0f};
    cs_shift_ref refs[1] = {{shift, 1.0f}};
    cs_render_params r;
    cs_render_params_init(&r);
    r.shifts = refs;
    r.n_shifts = 1;
    r.strengths = strengths;
    r.n_strengths = 5;
    cs_images *images = NULL;
    CHECK(cs_render(ctx, latent, &r, &images) == CS_STATUS_OK, "render");
    CHECK(cs_images_count(images) == 5, "count %zu", cs_images_count(images));
    int max_diff = 0;
    size_t frame = 64 * 64 * 4;
    CHECK(expected_bytes == 5 * frame, "expected size");
    for (size_t i = 0; i < cs_images_count(images); i++) {
        cs_image v;
        CHECK(cs_images_get(images, i, &v) == CS_STATUS_OK, "get %zu", i);
        CHECK(v.width == 64 && v.height == 64 && v.stride == 256 && v.format == CS_PIXEL_FORMAT_RGBA8, "view");
        for (size_t b = 0; b < frame; b++) {
            int d = abs((int)v.data[b] - (int)expected[i * frame + b]);
            if (d > max_diff) max_diff = d;
        }
    }
    CHECK(max_diff <= 1, "max pixel difference %d", max_diff);
    printf("render: max |pixel - golden| = %d\n", max_diff);

    /* BGRA is the same pixels with R and B swapped. */
    r.format = CS_PIXEL_FORMAT_BGRA8;
    cs_images *bgra = NULL;
    CHECK(cs_render(ctx, latent, &r, &bgra) == CS_STATUS_OK, "render bgra");
    cs_image a, b;
    cs_images_get(images, 4, &a);
    cs_images_get(bgra, 4, &b);
    int swapped = 1;
    for (size_t px = 0; px < 64 * 64; px++) {
        const unsigned char *s = a.data + 4 * px, *t = b.data + 4 * px;
        if (s[0] != t[2] || s[1] != t[1] || s[2] != t[0] || s[3] != t[3] || t[3] != 255) swapped = 0;
    }
    CHECK(swapped, "BGRA order");
    cs_images_free(bgra);

    /* Bad render requests. */
    cs_images *none_images = NULL;
    r.format = 9;
    CHECK(cs_render(ctx, latent, &r, &none_images) == CS_STATUS_INVALID_ARGUMENT, "bad format");
    r.format = CS_PIXEL_FORMAT_RGBA8;
    r.n_strengths = 0;
    CHECK(cs_render(ctx, latent, &r, &none_images) == CS_STATUS_INVALID_ARGUMENT, "no strengths");
    CHECK(strstr(cs_last_error(), "strengths") != NULL, "message names strengths");
    r.n_strengths = 5;
    strengths[1] = INFINITY;
    CHECK(cs_render(ctx, latent, &r, &none_images) == CS_STATUS_INVALID_ARGUMENT, "inf strength");
    strengths[1] = -1.5f;
    refs[0].shift = NULL;
    CHECK(cs_render(ctx, latent, &r, &none_images) == CS_STATUS_INVALID_ARGUMENT, "NULL shift");
    CHECK(none_images == NULL, "no images on failure");
    refs[0].shift = shift;

    /* Files: save, load, and the loaded shift renders the same. */
    snprintf(path, sizeof path, "%s/edit.safetensors", argv[5]);
    CHECK(cs_shift_save(shift, path) == CS_STATUS_OK, "shift save");
    cs_shift *loaded = NULL;
    CHECK(cs_shift_load(ctx, path, &loaded) == CS_STATUS_OK, "shift load");
    float *sb = malloc(shift_bytes);
    CHECK(cs_shift_to_floats(loaded, sb, n_shift) == CS_STATUS_OK && memcmp(sb, shift_data, shift_bytes) == 0, "shift round trip");
    snprintf(path, sizeof path, "%s/latent.safetensors", argv[5]);
    CHECK(cs_latent_save(latent, path) == CS_STATUS_OK, "latent save");
    cs_latent *latent2 = NULL;
    CHECK(cs_latent_load(ctx, path, &latent2) == CS_STATUS_OK, "latent load");
    CHECK(cs_latent_load(ctx, argv[1], &bad) == CS_STATUS_MODEL_FORMAT, "generator is not a latent file");
    CHECK(strstr(cs_last_error(), "wplus") != NULL, "message names the key: %s", cs_last_error());

    /* Sampling. */
    cs_latent *sampled = NULL;
    CHECK(cs_latent_from_seed(ctx, 7, 0.7f, &sampled) == CS_STATUS_OK, "seed");
    CHECK(cs_latent_from_seed(ctx, 7, 1.5f, &bad) == CS_STATUS_INVALID_ARGUMENT, "truncation range");

    cs_images_free(images);
    cs_latent_free(sampled);
    cs_latent_free(latent2);
    cs_latent_free(latent);
    cs_shift_free(loaded);
    cs_shift_free(shift);
    cs_context_free(ctx);
    cs_context_free(NULL);
    cs_latent_free(NULL);
    cs_shift_free(NULL);
    cs_images_free(NULL);
    free(back);
    free(sb);
    free(latent_data);
    free(shift_data);
    free(expected);

    if (argc == 9) edit_checks(argv[6], argv[7], argv[8], argv[5]);

    printf("c_abi: %d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
