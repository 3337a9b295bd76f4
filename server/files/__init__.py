"""The files listener (SDK uploads and downloads).

    store    the listener: routes, sandboxed paths, downloads (never active content inline)
    upload   uploads streamed once, straight to where they are stored
"""
