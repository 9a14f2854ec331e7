"""Hypothesis strategies for JSON-like values, shared by the service's tests."""

from hypothesis import strategies as st


def json_values(integers: st.SearchStrategy[int] | None = None) -> st.SearchStrategy:
    """Nested JSON-like values: None, bools, ``integers`` (any size by default), finite
    floats and text, in lists and str-keyed dicts."""
    scalars = (
        st.none()
        | st.booleans()
        | (st.integers() if integers is None else integers)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
        ),
        max_leaves=25,
    )


def json_objects(values: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """Str-keyed dicts of ``values``: what an op takes and returns."""
    return st.dictionaries(st.text(), values, max_size=8)
