"""kopf handlers: unpack kopf's arguments, call the modules that do the work, map errors to kopf's."""
