"""PBX features, one module each: hold music, voicemail (with MWI), transfer, forwarding."""
