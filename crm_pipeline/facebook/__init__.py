"""Meta (Facebook) Marketing API access: the SDK-backed client and a local Graph API emulator."""
