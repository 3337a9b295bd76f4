"""What every component that talks to a server shares: the agent, the autoscaler, the scheduler, the CLI.

    config     Settings: clearml.conf + environment, with per-key provenance (the one reader of both)
               (its table of settings: config_fields; casts: config_values, config_envs)
    api        ApiClient: the ClearML REST protocol over HTTP, with retries and token refresh
    recorder   record a local script as a task (repository, commit, diff, requirements)
"""
