/* Media types by file name extension, for files the gateway serves (static routes, error pages). */
#ifndef FG_MIME_H
#define FG_MIME_H

/* Content-Type for a file name, by its extension (case-insensitive); never NULL. */
const char *fg_mime_type(const char *name);

#endif
