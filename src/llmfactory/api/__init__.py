"""How llmfactory talks to models: transport, stream readers and one client per wire protocol."""
