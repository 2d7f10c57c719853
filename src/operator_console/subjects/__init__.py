"""Subject plug-ins, one package each; each implements `operator_console.contract`."""
