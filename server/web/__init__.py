"""The web listener: the experiment page (static/, plain ES modules, no build step).

    pages     routes: sign-in, the page, its assets, ClearML-style result links
    proxy     the API and stored files, reached in-process through the web origin
    session   the session cookie (sign-in with an access key and secret)
    official_ui  `--web-ui DIR`: the official ClearML web UI build in place of the page
"""
