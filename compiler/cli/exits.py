"""meshc's exit statuses (README, "Exit codes")."""

EXIT_OK, EXIT_FINDINGS, EXIT_INVALID, EXIT_INTERNAL, EXIT_ENVIRONMENT = 0, 1, 2, 3, 4
