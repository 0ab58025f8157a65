"""Jobs: what each workflow script calls. The only layer besides klomflow.config that
takes the raw config dict; it turns it into the typed values the layers below take."""
