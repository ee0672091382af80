/*
 * libFuzzer harness: process-details parsing (kudu_model_parse_details).
 * details.json is served as returned: it must be valid JSON, '\n'-ended,
 * of the length stated; anything refused is -EIO with a message.
 */
#include "kudu/model.h"
#include "kudu/kudu.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kudu_details d;
	char err[KUDU_ERRLEN] = "";
	int rc;

	memset(&d, 0, sizeof(d));
	rc = kudu_model_parse_details((const char *)data, size, &d, err, sizeof(err));
	if (rc < 0) {
		if (!err[0] || !memchr(err, '\0', sizeof(err)))
			abort();
		return 0;
	}
	if (rc != 0 || !d.json || !d.len || d.len != strlen(d.json) || d.json[d.len - 1] != '\n')
		abort();
	{
		json_error_t jerr;
		json_t *back = json_loadb(d.json, d.len, JSON_DECODE_ANY, &jerr);

		if (!back || !json_is_object(back))
			abort(); /* what details.json serves parses again, as an object */
		json_decref(back);
	}
	kudu_model_details_free(&d);
	return 0;
}
