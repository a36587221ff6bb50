/*
 * man-settings.c: print the SETTINGS section of tickets-fcgi(8) from the
 * app's own option table (config_man in fcgi-app/config.c), the table
 * --help prints, so the man page cannot drift from --help.  The Makefile
 * puts its output in place of @SETTINGS@ in man/tickets-fcgi.8.in.
 */
#include <stdio.h>

#include "config.h"

int main(void)
{
    config_man(stdout);
    return fflush(stdout) == 0 ? 0 : 1;
}
