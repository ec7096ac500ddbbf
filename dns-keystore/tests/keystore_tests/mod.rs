mod daemon;
mod keystore;
