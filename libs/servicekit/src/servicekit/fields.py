"""Field types for request bodies that mean what their JSON Schema says.

`WholeNumber`: an integer, strictly. JSON has a single number type, and JSON Schema counts
`3.0` as the integer 3, so `3.0` is accepted as 3; `3.5`, `"3"` and `true` are refused (pydantic's
own strict `int` refuses `3.0`, its lax `int` accepts `"3"`: neither matches the schema).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Strict


def _integral_float_to_int(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[int, BeforeValidator(_integral_float_to_int), Strict()]
