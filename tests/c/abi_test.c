/* Exercises libclipshape's C ABI the way a host does, on the tiny golden generator.
 * Built and run by tests/c_abi.rs with LD_LIBRARY_PATH unset: the library must find libtorch
 * through its own rpath.
 *
 * usage: abi_test GENERATOR.pt LATENT.f32 SHIFT.f32 EXPECTED.rgba TMPDIR
 *   LATENT.f32    W+ of the golden image (10×64 float32)
 *   SHIFT.f32     the golden edit direction for convs.3 (1×32×32×3×3 float32)
 *   EXPECTED.rgba golden renders at strengths -3, -1.5, 0, 1.5, 3 (5×64×64×4 bytes)
 */
#include <math.h>
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
    if (argc != 6) {
        fprintf(stderr, "usage: %s GENERATOR LATENT.f32 SHIFT.f32 EXPECTED.rgba TMPDIR\n", argv[0]);
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

    /* The real thing. */
    p.device = CS_DEVICE_KIND_CPU;
    p.device_index = 0;
    p.n_threads = 1;
    if (cs_context_create(&p, &ctx) != CS_STATUS_OK) {
        fprintf(stderr, "cannot create context: %s\n", cs_last_error());
        return 1;
    }
    CHECK(strcmp(cs_last_error(), "") == 0, "last error cleared on success");

    cs_generator_info info;
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
        cs_image_view v;
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
    cs_image_view a, b;
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

    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
