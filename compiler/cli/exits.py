"""meshc's exit statuses (README, "Exit codes")."""

EXIT_OK, EXIT_FINDINGS, EXIT_INVALID, EXIT_INTERNAL, EXIT_ENVIRONMENT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = (
    130  # 128 + SIGINT: what a shell reports of a process a Ctrl-C ended (also compiler.launch's)
)
