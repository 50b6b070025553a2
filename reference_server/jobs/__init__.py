"""Reference jobs family: a dispatcher modelled on HarpCaller and an agent modelled on harpd."""
