/* placeholder: not yet implemented */
typedef int ns_placeholder_t;
