mod burst;
mod certs;
mod daemon;
mod denials;
mod durability;
mod keystore;
mod outage;
mod recover;
