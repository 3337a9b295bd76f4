"""models.* endpoints.

    crud     the model registry the clearml SDK's OutputModel / InputModel / Model use
    batch    the *_many endpoints: one action per id, answered as succeeded/failed lists
"""
