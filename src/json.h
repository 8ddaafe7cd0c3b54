/* json.h: JSON <-> Lua values. Decoding uses cJSON; null is gcp.json.null (a light userdata)
 * and arrays carry a metatable so an empty array encodes as [] and not {}. */
#ifndef GCPR_JSON_H
#define GCPR_JSON_H

#include <lua.h>
#include <stddef.h>

#define GCPR_JSON_MAX_DEPTH 200

/* Decodes text and pushes the value; on a syntax error pushes nothing, returns 0 and writes
 * a message to err. Raises only on memory errors. */
int gcpr_json_decode(lua_State *L, const char *text, size_t len, char *err, size_t errlen);
/* Encodes the value at idx and pushes the string; raises on what JSON cannot hold. */
void gcpr_json_encode(lua_State *L, int idx, int pretty);

int gcpr_open_json(lua_State *L);

#endif
