/* libFuzzer target: the configuration loader (common/config.h) on arbitrary JSON text. It must
 * either return a config, which is then freed, or NULL with a NUL-terminated message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = malloc(size + 1);
    char err[256];
    if (!json)
        abort();
    memcpy(json, data, size);
    json[size] = '\0';
    memset(err, 'x', sizeof(err));

    fg_config_t *cfg = fg_config_load_string("fuzz.json", json, err, sizeof(err));
    if (cfg)
        fg_config_free(cfg);
    else if (!memchr(err, '\0', sizeof(err)))
        abort();
    free(json);
    return 0;
}
