"""HTTPS interception for apps that cannot change their base URL: the LLM API hosts prompttap
decrypts, the name-constrained local CA that signs their certificates, and the environment that
points a client at the forward proxy."""
