"""`/dashboard`: the operator's window, server-rendered pages over the same code as the
REST API (every figure and action goes through the API's handlers or the functions they
call), signed in with an API key. Templates and assets ship in this package."""
