"""The files listener (SDK uploads and downloads) and where files are kept.

    store    the listener: routes, auth, sandbox headers
    upload   uploads streamed once, straight to the backend (all parts or none)
    serve    downloads: GET/HEAD, one byte range, never active content inline
    backend  the storage interface, object-path checks, build_backend(config)
    local    backend: a directory on this machine (default, data_dir/files)
    s3       backend: an S3-compatible bucket (boto3; AWS S3, MinIO), shared by every replica
"""
