# How a deployment goes.
type E2e::Mode = Enum[fast, safe]
