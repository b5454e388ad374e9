from order.models import Base
from servicekit.data.migrations import run_env

run_env(Base.metadata, "order")
