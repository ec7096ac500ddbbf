mod certs;
mod daemon;
mod keystore;
